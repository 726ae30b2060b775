//! Loading the model key for `--credential-env` / `--credential-file`.
//!
//! Guarantees: the process is hardened (not dumpable, no core dumps, no `LD_*`) before the key is
//! copied into locked memory; a key taken from an environment variable is wiped in place in the
//! process's environment block (so `/proc/<pid>/environ` of this process and of everything forked
//! from it no longer holds it) and the variable removed, also when the key is refused; the
//! transient copies are zeroized; errors never contain key bytes.

use zeroize::Zeroizing;

use crate::{CredentialSource, LockedSecret, SessionError};

/// Reads the key from `source` into locked memory.
///
/// Call it while the process is single-threaded, before any fork (before [`crate::prepare`] and
/// before reading the environment for the policy): wiping and removing an environment variable
/// races with other threads reading the environment. [`CredentialSource::Given`] has no key to
/// load here and is an error.
pub fn load_credential(source: &CredentialSource) -> Result<LockedSecret, SessionError> {
    let value = match source {
        CredentialSource::Env { var } => {
            let value = std::env::var(var).map(Zeroizing::new);
            // Wiped and removed whatever happens next: no copy of the variable stays behind.
            warden_credproxy::scrub_env_var(var);
            value.map_err(|_| SessionError::CredentialVarUnset { var: var.clone() })?
        }
        CredentialSource::File { path } => std::fs::read_to_string(path)
            .map(Zeroizing::new)
            .map_err(|source| SessionError::CredentialFile { path: path.clone(), source })?,
        CredentialSource::Given => {
            return Err(SessionError::CredentialMismatch("a `given` credential is passed by the caller, not loaded"))
        }
    };
    // No core dumps, not ptrace-able, no LD_* influence: before any thread exists.
    warden_credproxy::harden_process().map_err(SessionError::Harden)?;
    warden_credproxy::key_from_str(value.trim_end_matches(['\r', '\n']))
        .map_err(|error| SessionError::CredentialKey { source_desc: source.describe(), error })
}

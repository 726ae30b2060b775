//! Name resolution for the upstream connection, in Rust (hickory), not glibc's `getaddrinfo`.
//!
//! warden is one static binary; a static glibc resolves names itself only for the `files` and
//! `dns` sources and would have to `dlopen` other NSS modules (`resolve`, `mdns4_minimal`,
//! `myhostname` on many distributions) built for another glibc. hickory reads `/etc/resolv.conf`
//! and `/etc/hosts` the same way on every machine. The resolver is built on first use, so a proxy
//! whose upstream is an IP literal (hyper-util never asks the resolver for those) reads neither.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hyper_util::client::legacy::connect::dns::Name;

/// Most addresses tried for one name.
const MAX_ADDRS: usize = 16;

/// A `tower::Service<Name>` for hyper-util's `HttpConnector`.
#[derive(Clone)]
pub(crate) struct HickoryResolve {
    resolver: Arc<OnceLock<Result<TokioResolver, String>>>,
    timeout: Duration,
}

impl HickoryResolve {
    /// A resolver whose lookups give up after `timeout`.
    pub(crate) fn new(timeout: Duration) -> HickoryResolve {
        HickoryResolve { resolver: Arc::new(OnceLock::new()), timeout }
    }
}

type Lookup = Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, io::Error>> + Send>>;

impl tower_service::Service<Name> for HickoryResolve {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Lookup;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Lookup {
        let this = self.clone();
        Box::pin(async move {
            let resolver = this.resolver.get_or_init(|| {
                TokioResolver::builder_tokio()
                    .and_then(|b| b.build())
                    .map_err(|e| format!("resolver configuration (/etc/resolv.conf): {e}"))
            });
            let resolver = resolver.as_ref().map_err(|e| io::Error::other(e.clone()))?;
            let host = name.as_str();
            // Absolute name: search domains never apply to an upstream URL's host.
            let fqdn = if host.ends_with('.') { host.to_owned() } else { format!("{host}.") };
            let found = tokio::time::timeout(this.timeout, resolver.lookup_ip(fqdn.as_str()))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("resolving {host}: timed out")))?
                .map_err(|e| io::Error::other(format!("resolving {host}: {e}")))?;
            // The port is filled in by the connector.
            let addrs: Vec<SocketAddr> = found.iter().take(MAX_ADDRS).map(|ip| SocketAddr::new(ip, 0)).collect();
            if addrs.is_empty() {
                return Err(io::Error::other(format!("resolving {host}: no addresses")));
            }
            Ok(addrs.into_iter())
        })
    }
}

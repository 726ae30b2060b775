#!/usr/bin/env node
// The `warden` command of the npm package @warden-sandbox/warden: it runs the static binary that
// the platform package for this machine (@warden-sandbox/warden-linux-x64 or -linux-arm64, an
// optional dependency npm installs only where its "os"/"cpu" match) holds, the way @openai/codex
// does it. No postinstall script, no download: the binary arrives as an ordinary package.
//
// The binary gets the same arguments, environment and standard streams (inherited: a terminal stays
// warden's terminal, in the same process group, so warden's own job control and terminal relay
// work as when it is run directly). Signals sent to this process are forwarded to it; its exit
// status becomes ours, and when it was killed by a signal that signal is raised again on this
// process (128+N as the exit status if the signal does not end Node).
"use strict";

const { spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const LAUNCHER = "@warden-sandbox/warden";
const PLATFORM_PACKAGES = {
  "linux x64": "@warden-sandbox/warden-linux-x64",
  "linux arm64": "@warden-sandbox/warden-linux-arm64",
};

function fail(message) {
  process.stderr.write(`warden (npm launcher): ${message}\n`);
  process.exit(1);
}

function launcherVersion() {
  try {
    return JSON.parse(fs.readFileSync(path.join(__dirname, "..", "package.json"), "utf8")).version;
  } catch {
    return null;
  }
}

const key = `${process.platform} ${process.arch}`;
const platformPackage = PLATFORM_PACKAGES[key];
if (!platformPackage) {
  fail(
    `no warden build for ${process.platform}/${process.arch}: there are builds for Linux x64 ` +
      `(${PLATFORM_PACKAGES["linux x64"]}) and Linux arm64 (${PLATFORM_PACKAGES["linux arm64"]}) only.`,
  );
}

// The platform package is a dependency of this package: resolve it from here (nested under our
// node_modules, or hoisted next to us, including the global lib/node_modules).
let binary;
try {
  binary = path.join(path.dirname(require.resolve(`${platformPackage}/package.json`)), "bin", "warden");
} catch {
  const version = launcherVersion();
  const spec = version ? `${platformPackage}@${version}` : platformPackage;
  fail(
    `the package ${platformPackage}, which holds the warden binary for ${key}, is not installed ` +
      `(npm skips optional dependencies with --omit=optional, or when node_modules was installed ` +
      `on another platform). Install it next to ${LAUNCHER}: npm install -g ${spec}`,
  );
}
if (!fs.existsSync(binary)) {
  fail(`${platformPackage} is installed but has no binary at ${binary}: reinstall ${platformPackage}.`);
}

const child = spawn(binary, process.argv.slice(2), { stdio: "inherit" });

child.on("error", (err) => {
  // Spawning failed (the binary is not executable, say); the child never ran.
  fail(`cannot run ${binary}: ${err.message}`);
});

// Every signal that would end Node (or that Node would otherwise keep for itself, like SIGUSR1 for
// its inspector) and that warden relays to the sandboxed command, plus SIGWINCH and SIGCONT.
// SIGKILL and SIGSTOP cannot be caught; SIGTSTP/SIGTTIN/SIGTTOU keep their default (this process
// stops with its job; warden stops on its own). A terminal's Ctrl-C or resize reaches the whole
// foreground process group, warden included, so warden may see such a signal twice; it coalesces
// them (one pending instance each) and a second SIGINT or SIGWINCH is harmless anyway.
const FORWARDED = [
  "SIGHUP",
  "SIGINT",
  "SIGQUIT",
  "SIGTERM",
  "SIGUSR1",
  "SIGUSR2",
  "SIGWINCH",
  "SIGCONT",
  "SIGALRM",
  "SIGVTALRM",
  "SIGXCPU",
  "SIGXFSZ",
  "SIGPWR",
  "SIGIO",
  "SIGSTKFLT",
].filter((s) => os.constants.signals[s] !== undefined);

const listeners = new Map();
for (const sig of FORWARDED) {
  const forward = () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill(sig);
      } catch {
        // The child is gone between the check and the kill: its exit event follows.
      }
    }
  };
  try {
    process.on(sig, forward);
    listeners.set(sig, forward);
  } catch {
    // A signal this platform will not let Node listen to: it keeps its default.
  }
}

child.on("exit", (code, signal) => {
  // Our handlers go, so each signal is back to its default disposition before it is re-raised.
  for (const [sig, forward] of listeners) {
    process.removeListener(sig, forward);
  }
  if (signal) {
    // What a shell reports for a command killed by signal N, kept if the signal does not end us
    // (one Node ignores, like SIGPIPE).
    process.exitCode = 128 + (os.constants.signals[signal] || 0);
    try {
      process.kill(process.pid, signal);
    } catch {
      // Fall through to exiting with 128+N.
    }
    return;
  }
  process.exit(code === null ? 1 : code);
});

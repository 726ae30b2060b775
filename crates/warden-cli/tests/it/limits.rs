//! rlimits, the timeout, process-tree cleanup, signal forwarding and exit statuses.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{marker_pids, sleep_marker, wait_until, Scratch, PY};

#[test]
fn fork_bomb_is_contained_by_max_procs() {
    let s = Scratch::temp();
    let code = r#"import os, time, errno
ok = fail = 0
pids = []
for i in range(500):
    try:
        p = os.fork()
    except OSError as e:
        if e.errno != errno.EAGAIN: raise
        fail += 1
        continue
    if p == 0:
        time.sleep(2)
        os._exit(0)
    ok += 1
    pids.append(p)
print('forked', ok, 'failed', fail)
for p in pids: os.waitpid(p, 0)
"#;
    let start = Instant::now();
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--max-procs", "50", "-C"])
        .args([&s.ws])
        .args(["--", PY, "-c", code])
        .limit(Duration::from_secs(60))
        .run();
    out.success();
    let nums: Vec<u32> = out.stdout.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let [forked, failed] = nums[..] else { out.fail("no fork counts") };
    assert!(failed > 0, "no fork failed with EAGAIN under --max-procs 50");
    assert!(forked < 50, "forked {forked} processes under --max-procs 50");
    assert!(start.elapsed() < Duration::from_secs(30), "the fork bomb took {:?}", start.elapsed());
}

#[test]
fn timeout_kills_the_whole_tree() {
    let s = Scratch::temp();
    let marker = sleep_marker(1);
    let start = Instant::now();
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--timeout", "2", "-C"])
        .args([&s.ws])
        .args(["--", "sh", "-c", &format!("sleep {marker} & sleep {marker}")])
        .limit(Duration::from_secs(30))
        .run();
    out.code(124).stderr_has("timed out");
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    assert!(
        wait_until(Duration::from_secs(5), || marker_pids(&marker).is_empty()),
        "processes survived the timeout: {:?}",
        marker_pids(&marker)
    );
}

#[test]
fn timeout_kills_daemonized_grandchildren() {
    let s = Scratch::temp();
    let marker = sleep_marker(2);
    // setsid + double fork: the grandchild leaves the process group and is reparented.
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--timeout", "2", "-C"])
        .args([&s.ws])
        .args(["--", "sh", "-c", &format!("setsid sh -c 'sleep {marker} &' ; sleep {marker}")])
        .limit(Duration::from_secs(30))
        .run();
    out.code(124);
    assert!(
        wait_until(Duration::from_secs(5), || marker_pids(&marker).is_empty()),
        "processes survived the timeout: {:?}",
        marker_pids(&marker)
    );
}

#[test]
fn background_processes_die_when_the_command_exits() {
    let s = Scratch::temp();
    let marker = sleep_marker(3);
    let out = s.sh("offline", &format!("nohup sleep {marker} >/dev/null 2>&1 & echo started"));
    out.success().stdout_has("started");
    assert!(
        wait_until(Duration::from_secs(5), || marker_pids(&marker).is_empty()),
        "a background process outlived the sandbox: {:?}",
        marker_pids(&marker)
    );
}

#[test]
fn sigkill_of_warden_kills_the_tree() {
    let s = Scratch::temp();
    let marker = sleep_marker(4);
    let mut cmd = Command::new(crate::warden_path());
    cmd.args(["run", "-C"])
        .arg(&s.ws)
        .args(["--", "sh", "-c", &format!("sleep {marker} & sleep {marker}")])
        .current_dir(&s.ws)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn warden");
    // Both sleeps (and warden, whose argv has the marker) are running.
    let up = wait_until(Duration::from_secs(20), || marker_pids(&marker).len() >= 3);
    child.kill().expect("SIGKILL warden");
    let _ = child.wait();
    assert!(up, "the command did not start: {:?}", marker_pids(&marker));
    assert!(
        wait_until(Duration::from_secs(5), || marker_pids(&marker).is_empty()),
        "processes survived SIGKILL of warden: {:?}",
        marker_pids(&marker)
    );
}

#[test]
fn sigterm_is_forwarded_to_the_command() {
    let s = Scratch::temp();
    let ready = s.ws.join("ready");
    let script = "trap 'echo got-term; exit 7' TERM; touch ready; i=0; \
                  while [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; echo not-signalled";
    let mut child = Command::new(crate::warden_path())
        .args(["run", "-p", "workspace-write", "-C"])
        .arg(&s.ws)
        .args(["--", "sh", "-c", script])
        .current_dir(&s.ws)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warden");
    let started = wait_until(Duration::from_secs(20), || ready.exists());
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    if let Some(mut o) = child.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut stdout);
    }
    assert!(started, "the command never became ready");
    let status = status.expect("warden did not exit within 30 s of SIGTERM");
    assert_eq!(status.code(), Some(7), "stdout: {stdout}");
    assert!(stdout.contains("got-term") && !stdout.contains("not-signalled"), "stdout: {stdout}");
}

#[test]
fn max_file_size_is_enforced() {
    let s = Scratch::temp();
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--max-file-size", "1M", "-C"])
        .args([&s.ws])
        .args([
            "--",
            PY,
            "-c",
            "import errno\n\
             try:\n\
             \x20   open('/tmp/big', 'wb').write(b'x' * (4 << 20)); print('WROTE')\n\
             except OSError as e:\n\
             \x20   print('errno', errno.errorcode[e.errno])\n",
        ])
        .run();
    out.success().stdout_has("errno EFBIG").stdout_lacks("WROTE");
}

#[test]
fn memory_limit_is_enforced() {
    let s = Scratch::temp();
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--memory", "512M", "-C"])
        .args([&s.ws])
        .args([
            "--",
            PY,
            "-c",
            "try:\n    b = bytearray(2 << 30); print('ALLOCATED')\nexcept MemoryError:\n    print('memory-error')\n",
        ])
        .run();
    out.success().stdout_has("memory-error").stdout_lacks("ALLOCATED");
}

#[test]
fn cpu_limit_is_enforced() {
    let s = Scratch::temp();
    let start = Instant::now();
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--cpu-seconds", "1", "-C"])
        .args([&s.ws])
        .args([
            "--",
            PY,
            "-c",
            "import time\nend = time.time() + 30\nwhile time.time() < end: pass\nprint('FINISHED')\n",
        ])
        .limit(Duration::from_secs(60))
        .run();
    out.stdout_lacks("FINISHED");
    // SIGXCPU (24) or SIGKILL (9) at the hard limit.
    assert!(matches!(out.code, Some(152) | Some(137)), "exit {:?}", out.code);
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
}

// --- exit statuses -----------------------------------------------------------------------------

#[test]
fn exit_status_is_the_commands() {
    Scratch::temp().sh("offline", "exit 3").code(3);
}

#[test]
fn death_by_signal_is_128_plus_n() {
    Scratch::temp().sh("offline", "kill -TERM $$").code(143);
}

#[test]
fn command_not_found_is_127() {
    let s = Scratch::temp();
    // A PATH whose every directory is searchable (the test user's PATH may hold /root/... that
    // nobody cannot search, which execvp reports as EACCES, i.e. 126).
    let out = crate::warden()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .current_dir(&s.ws)
        .args(["run", "-C"])
        .args([&s.ws])
        .args(["--", "warden-no-such-command-xyz"])
        .run();
    out.code(127).stderr_has("not found");
}

#[test]
fn command_not_executable_is_126() {
    let s = Scratch::temp();
    s.file("ws/script.sh", "#!/bin/sh\necho ran\n");
    warden_testkit::set_mode(&s.ws.join("script.sh"), 0o644);
    let out = crate::warden().current_dir(&s.ws).args(["run", "-C"]).args([&s.ws]).args(["--", "./script.sh"]).run();
    out.code(126).stdout_lacks("ran");
}

#[test]
fn unknown_flag_is_usage_error_2() {
    crate::warden().args(["run", "--no-such-flag", "--", "true"]).run().code(2).stderr_has("--no-such-flag");
}

#[test]
fn invalid_profile_is_usage_error_2() {
    crate::warden().args(["run", "-p", "bogus", "--", "true"]).run().code(2).stderr_has("bogus");
}

/// Bytes `dd` reports having copied (0 when it copied nothing).
fn copied(out: &str, tag: &str) -> u64 {
    out.lines()
        .find(|l| l.starts_with(tag))
        .and_then(|l| l[tag.len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn private_tmpfs_directories_share_one_cap() {
    let s = Scratch::temp();
    // 6 MiB into /tmp, then 6 MiB into /dev/shm, /run and $TMPDIR: together at most the 8 MiB cap.
    let script = "for d in /tmp /dev/shm /run /var/tmp; do \
                  n=$(dd if=/dev/zero of=$d/fill bs=1M count=6 2>&1 | grep -o '^[0-9]* bytes' | grep -o '^[0-9]*'); \
                  echo \"$d ${n:-0}\"; done; df -k /tmp | tail -n 1";
    let out = s.sh_with("offline", &["--tmp-size", "8M"], script);
    out.success();
    let total: u64 = ["/tmp ", "/dev/shm ", "/run ", "/var/tmp "].iter().map(|t| copied(&out.stdout, t)).sum();
    assert!(copied(&out.stdout, "/tmp ") == 6 << 20, "the first 6 MiB fit: {}", out.stdout);
    assert!(total <= 8 << 20, "together they held {total} bytes, over the 8 MiB cap: {}", out.stdout);
    assert!(out.stdout.contains(" 8192 "), "df shows the 8 MiB cap: {}", out.stdout);
    // By default: half of --memory, when that is less than a quarter of the machine's memory.
    let out = s.sh_with("offline", &["--memory", "64M"], "df -k /dev/shm | tail -n 1");
    out.success().stdout_has(" 32768 ");
    // Bounds are checked, naming the flag and the accepted range.
    s.sh_with("offline", &["--tmp-size", "4096"], "true").code(125).stderr_has("--tmp-size").stderr_has("1 MiB");
}

/// The pids cgroup directory (a `warden-*` child of one of the hierarchies warden uses) that
/// holds process `pid`, from `/proc/PID/cgroup`.
fn warden_cgroup_of(pid: u32) -> Option<std::path::PathBuf> {
    let lines = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let roots = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/pids"];
    lines.lines().filter_map(|l| l.rsplit_once(':').map(|(_, path)| path)).find_map(|path| {
        let rel = path.strip_prefix('/').filter(|r| r.starts_with("warden-"))?;
        roots.iter().map(|r| std::path::Path::new(r).join(rel)).find(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .is_ok_and(|p| p.split_whitespace().any(|x| x == pid.to_string()))
        })
    })
}

/// The start time of a process (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat.rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(19))
        .and_then(|t| t.parse().ok())
        .expect("starttime")
}

/// Root only (the pids cgroup exists only for root's `--max-procs`): the cgroup of a warden
/// killed with SIGKILL is left behind, and the next run removes it; a cgroup of a live run, a
/// stale-looking one that still has a process, and other directories stay.
#[test]
fn the_next_run_removes_the_pids_cgroup_of_a_killed_warden() {
    root_only!();
    let s = Scratch::temp();
    let marker = sleep_marker(30);
    let mut killed = Command::new(crate::warden_path())
        .args(["run", "--max-procs", "50", "-C"])
        .arg(&s.ws)
        .args(["--", "sleep", &marker])
        .current_dir(&s.ws)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warden");
    let mut sleep = None;
    wait_until(Duration::from_secs(20), || {
        sleep = crate::pids_named(&marker, "sleep").first().copied();
        sleep.is_some()
    });
    let stale = sleep.and_then(warden_cgroup_of);
    killed.kill().expect("SIGKILL warden");
    let _ = killed.wait();
    let stale = stale.unwrap_or_else(|| panic!("no warden pids cgroup holds the sandbox's sleep {sleep:?}"));
    assert!(wait_until(Duration::from_secs(10), || marker_pids(&marker).is_empty()), "the sandbox survived");
    assert!(stale.is_dir(), "{} vanished without a next run", stale.display());
    let root = stale.parent().expect("a hierarchy").to_path_buf();
    // A run in progress (this test process is alive) and a stale-looking cgroup that still holds
    // a process must stay, as must anything not named by warden's scheme.
    let me = std::process::id();
    let live = root.join(format!("warden-{me}-{}-9999", start_time(me)));
    let busy = root.join(format!("warden-{}-1-0", u32::MAX - 1));
    let other = root.join(format!("warden-test-{me}"));
    for d in [&live, &busy, &other] {
        std::fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    }
    let mut holder = Command::new("sleep").arg("60").spawn().expect("spawn sleep");
    std::fs::write(busy.join("cgroup.procs"), holder.id().to_string()).expect("move sleep into the cgroup");
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--max-procs", "50", "-C"])
        .args([&s.ws])
        .args(["--", "true"])
        .run();
    let (stale_left, live_left, busy_left, other_left) = (stale.is_dir(), live.is_dir(), busy.is_dir(), other.is_dir());
    let _ = holder.kill();
    let _ = holder.wait();
    for d in [&live, &busy, &other] {
        let _ = wait_until(Duration::from_secs(5), || std::fs::remove_dir(d).is_ok() || !d.exists());
    }
    out.success();
    assert!(!stale_left, "the stale cgroup {} was not removed by the next run", stale.display());
    assert!(live_left && busy_left && other_left, "a cgroup that is not stale was removed");
}

//! Restart policies (`--restart`, Docker's `HostConfig.RestartPolicy`): what they are, how
//! they are validated, and whether (and after how long) an exited container is started again.
//!
//! The rules are dockerd's (moby's `restartmanager` and `ValidateRestartPolicy`): the delay
//! starts at 100 ms and doubles with every restart up to a minute, back to 100 ms once a run
//! lasted 10 s; a container stopped or killed through the API is not restarted until it is
//! started again, except that `always` (not `unless-stopped`) comes back when the daemon
//! starts. The daemon only acts on these answers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::PlanError;

/// The first delay before a restart.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay before a restart.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay to [`FIRST_DELAY`].
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// A container's restart policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "name")]
pub enum RestartPolicy {
    /// `no`: never restarted (the default).
    #[default]
    No,
    /// `always`: restarted whatever its exit, and when the daemon starts.
    Always,
    /// `unless-stopped`: as `always`, unless it was stopped through the API.
    UnlessStopped,
    /// `on-failure[:N]`: restarted after a non-zero exit, at most `max_retries` times
    /// (0: no limit).
    OnFailure {
        /// Docker's `MaximumRetryCount`.
        max_retries: u32,
    },
}

impl RestartPolicy {
    /// From Docker's `RestartPolicy {Name, MaximumRetryCount}`, validated with dockerd's
    /// messages (a 400).
    pub fn from_docker(name: &str, max_retries: i64) -> Result<RestartPolicy, PlanError> {
        match name {
            "" | "no" | "always" | "unless-stopped" => {
                // An empty name is what clients before Docker 25 sent for "none", with any
                // count: accepted as dockerd does.
                if max_retries != 0 && !name.is_empty() {
                    let mut msg = "invalid restart policy: maximum retry count can only be used \
                                   with 'on-failure'"
                        .to_string();
                    if max_retries < 0 {
                        msg.push_str(" and cannot be negative");
                    }
                    return Err(PlanError::Invalid(msg));
                }
                Ok(match name {
                    "always" => RestartPolicy::Always,
                    "unless-stopped" => RestartPolicy::UnlessStopped,
                    _ => RestartPolicy::No,
                })
            }
            "on-failure" => {
                let max_retries = u32::try_from(max_retries).map_err(|_| {
                    PlanError::Invalid(if max_retries < 0 {
                        "invalid restart policy: maximum retry count cannot be negative".into()
                    } else {
                        format!("invalid restart policy: maximum retry count {max_retries} is too large")
                    })
                })?;
                Ok(RestartPolicy::OnFailure { max_retries })
            }
            other => Err(PlanError::Invalid(format!(
                "invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', \
                 'on-failure', or 'unless-stopped'"
            ))),
        }
    }

    /// Docker's `(Name, MaximumRetryCount)` of it, as inspect shows it.
    pub fn docker_name(self) -> (&'static str, u32) {
        match self {
            RestartPolicy::No => ("no", 0),
            RestartPolicy::Always => ("always", 0),
            RestartPolicy::UnlessStopped => ("unless-stopped", 0),
            RestartPolicy::OnFailure { max_retries } => ("on-failure", max_retries),
        }
    }

    /// Whether it is `no`.
    pub fn is_none(self) -> bool {
        self == RestartPolicy::No
    }
}

/// The CLI's `--restart VALUE` (`no`, `always`, `unless-stopped`, `on-failure[:N]`) as Docker's
/// `(Name, MaximumRetryCount)`, with the docker CLI's messages; the name itself is checked by
/// the daemon ([`RestartPolicy::from_docker`]).
pub fn parse_flag(value: &str) -> Result<(String, i64), PlanError> {
    let (name, count) = match value.split_once(':') {
        Some(("", _)) => {
            return Err(PlanError::Invalid(
                "invalid restart policy format: no policy provided before colon".into(),
            ))
        }
        Some((name, count)) => (name, count),
        None => (value, ""),
    };
    let count = if count.is_empty() {
        0
    } else {
        count.parse::<i64>().map_err(|_| {
            PlanError::Invalid(
                "invalid restart policy format: maximum retry count must be an integer".into(),
            )
        })?
    };
    Ok((name.to_string(), count))
}

/// What the daemon remembers of a container's restarts (kept with its state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartMemory {
    /// Restarts by the policy since the container was last started through the API
    /// (Docker's `RestartCount`).
    #[serde(default)]
    pub count: u32,
    /// The delay before the last restart, in milliseconds (0: none yet).
    #[serde(default)]
    pub last_delay_ms: u64,
    /// Stopped or killed through the API since its last start (Docker's
    /// `HasBeenManuallyStopped`).
    #[serde(default)]
    pub manually_stopped: bool,
}

/// What to do with a container whose command just exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It stays exited.
    Stay,
    /// Start it again after `delay`; `memory` is what to remember from now on.
    Restart {
        /// How long to wait first.
        delay: Duration,
        /// The new memory (count incremented, this delay).
        memory: RestartMemory,
    },
}

/// Decides, as dockerd's restart manager, whether a container whose command exited with
/// `exit_code` after running for `ran` is started again, and after how long.
pub fn on_exit(
    policy: RestartPolicy,
    exit_code: i32,
    ran: Duration,
    memory: RestartMemory,
) -> Decision {
    // A stop or kill through the API cancels the policy until the next start (dockerd's
    // `ExitOnNext`), whatever the policy.
    if policy.is_none() || memory.manually_stopped {
        return Decision::Stay;
    }
    let restart = match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        RestartPolicy::OnFailure { max_retries } => {
            exit_code != 0 && (max_retries == 0 || memory.count < max_retries)
        }
    };
    if !restart {
        return Decision::Stay;
    }
    let last = if ran >= RESET_AFTER {
        Duration::ZERO
    } else {
        Duration::from_millis(memory.last_delay_ms)
    };
    let delay = if last.is_zero() {
        FIRST_DELAY
    } else {
        (last * 2).min(MAX_DELAY)
    };
    Decision::Restart {
        delay,
        memory: RestartMemory {
            count: memory.count.saturating_add(1),
            last_delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            manually_stopped: false,
        },
    }
}

/// Whether the daemon starts an exited container when it starts itself (dockerd's restore:
/// a fresh restart manager, so `always` comes back even after a stop, `unless-stopped` only if
/// it was not stopped, `on-failure` after a failure within its retries). Only containers that
/// were started at least once.
pub fn at_daemon_start(
    policy: RestartPolicy,
    exit_code: i32,
    started_before: bool,
    memory: RestartMemory,
) -> bool {
    if !started_before {
        return false;
    }
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always => true,
        RestartPolicy::UnlessStopped => !memory.manually_stopped,
        RestartPolicy::OnFailure { max_retries } => {
            exit_code != 0 && (max_retries == 0 || memory.count < max_retries)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(count: u32, last_delay_ms: u64, manually_stopped: bool) -> RestartMemory {
        RestartMemory {
            count,
            last_delay_ms,
            manually_stopped,
        }
    }

    #[test]
    fn docker_names_and_dockerds_messages() {
        assert_eq!(RestartPolicy::from_docker("", 0), Ok(RestartPolicy::No));
        assert_eq!(RestartPolicy::from_docker("", 5), Ok(RestartPolicy::No));
        assert_eq!(RestartPolicy::from_docker("no", 0), Ok(RestartPolicy::No));
        assert_eq!(
            RestartPolicy::from_docker("always", 0),
            Ok(RestartPolicy::Always)
        );
        assert_eq!(
            RestartPolicy::from_docker("unless-stopped", 0),
            Ok(RestartPolicy::UnlessStopped)
        );
        assert_eq!(
            RestartPolicy::from_docker("on-failure", 3),
            Ok(RestartPolicy::OnFailure { max_retries: 3 })
        );
        let msg = |r: Result<RestartPolicy, PlanError>| r.err().map(|e| e.to_string());
        assert_eq!(
            msg(RestartPolicy::from_docker("always", 2)).as_deref(),
            Some("invalid restart policy: maximum retry count can only be used with 'on-failure'")
        );
        assert_eq!(
            msg(RestartPolicy::from_docker("no", -1)).as_deref(),
            Some(
                "invalid restart policy: maximum retry count can only be used with 'on-failure' \
                 and cannot be negative"
            )
        );
        assert_eq!(
            msg(RestartPolicy::from_docker("on-failure", -1)).as_deref(),
            Some("invalid restart policy: maximum retry count cannot be negative")
        );
        assert_eq!(
            msg(RestartPolicy::from_docker("sometimes", 0)).as_deref(),
            Some(
                "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', \
                 'on-failure', or 'unless-stopped'"
            )
        );
        for p in [
            RestartPolicy::No,
            RestartPolicy::Always,
            RestartPolicy::UnlessStopped,
            RestartPolicy::OnFailure { max_retries: 7 },
        ] {
            let (name, n) = p.docker_name();
            assert_eq!(RestartPolicy::from_docker(name, i64::from(n)), Ok(p));
        }
    }

    #[test]
    fn the_cli_flag_splits_name_and_count() {
        assert_eq!(parse_flag("always"), Ok(("always".into(), 0)));
        assert_eq!(parse_flag("on-failure:3"), Ok(("on-failure".into(), 3)));
        assert_eq!(parse_flag("on-failure:"), Ok(("on-failure".into(), 0)));
        assert_eq!(parse_flag("no:2"), Ok(("no".into(), 2)));
        assert!(matches!(parse_flag(":3"), Err(PlanError::Invalid(m)) if m.contains("no policy")));
        assert!(
            matches!(parse_flag("on-failure:x"), Err(PlanError::Invalid(m)) if m.contains("must be an integer"))
        );
    }

    #[test]
    fn on_failure_n_runs_n_plus_one_times_in_all() {
        let p = RestartPolicy::OnFailure { max_retries: 2 };
        let short = Duration::from_millis(5);
        let mut m = RestartMemory::default();
        let mut delays = Vec::new();
        loop {
            match on_exit(p, 1, short, m) {
                Decision::Stay => break,
                Decision::Restart { delay, memory } => {
                    delays.push(delay);
                    m = memory;
                }
            }
        }
        assert_eq!(
            delays,
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
        assert_eq!(m.count, 2);
        // A success is not a failure; no limit with 0.
        assert_eq!(
            on_exit(p, 0, short, RestartMemory::default()),
            Decision::Stay
        );
        let unlimited = RestartPolicy::OnFailure { max_retries: 0 };
        assert!(matches!(
            on_exit(unlimited, 3, short, mem(1000, 100, false)),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn the_delay_doubles_to_a_minute_and_resets_after_ten_seconds() {
        let p = RestartPolicy::Always;
        let mut m = RestartMemory::default();
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            let Decision::Restart { delay, memory } = on_exit(p, 0, Duration::from_secs(1), m)
            else {
                panic!("always restarts");
            };
            assert!(delay >= last && delay <= MAX_DELAY);
            last = delay;
            m = memory;
        }
        assert_eq!(last, MAX_DELAY);
        assert_eq!(m.count, 20);
        let Decision::Restart { delay, memory } = on_exit(p, 0, RESET_AFTER, m) else {
            panic!("always restarts");
        };
        assert_eq!(delay, FIRST_DELAY);
        assert_eq!(memory.count, 21, "the count is not reset by a long run");
    }

    #[test]
    fn a_stop_through_the_api_cancels_every_policy() {
        let short = Duration::from_millis(5);
        for p in [
            RestartPolicy::No,
            RestartPolicy::Always,
            RestartPolicy::UnlessStopped,
            RestartPolicy::OnFailure { max_retries: 0 },
        ] {
            assert_eq!(on_exit(p, 137, short, mem(0, 0, true)), Decision::Stay);
        }
        assert_eq!(
            on_exit(RestartPolicy::No, 1, short, RestartMemory::default()),
            Decision::Stay
        );
    }

    #[test]
    fn at_daemon_start_always_comes_back_unless_stopped_stays_stopped() {
        let stopped = mem(0, 0, true);
        let died = RestartMemory::default();
        assert!(at_daemon_start(RestartPolicy::Always, 0, true, stopped));
        assert!(at_daemon_start(RestartPolicy::Always, 0, true, died));
        assert!(!at_daemon_start(
            RestartPolicy::UnlessStopped,
            0,
            true,
            stopped
        ));
        assert!(at_daemon_start(RestartPolicy::UnlessStopped, 0, true, died));
        assert!(!at_daemon_start(RestartPolicy::No, 1, true, died));
        assert!(at_daemon_start(
            RestartPolicy::OnFailure { max_retries: 2 },
            1,
            true,
            mem(1, 100, false)
        ));
        assert!(!at_daemon_start(
            RestartPolicy::OnFailure { max_retries: 2 },
            1,
            true,
            mem(2, 100, false)
        ));
        assert!(!at_daemon_start(
            RestartPolicy::OnFailure { max_retries: 2 },
            0,
            true,
            died
        ));
        // Never started: `docker create --restart always` is not started by the daemon.
        assert!(!at_daemon_start(RestartPolicy::Always, 0, false, died));
    }
}

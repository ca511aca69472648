//! Errors as the user sees them: one line saying what is wrong and what to do.

use std::error::Error;

use crate::{
    control::{OpenError, ServiceError},
    daemon::DaemonError,
    datapath::DatapathError,
    reset::ResetError,
};

/// An error caused by the user's input or environment, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct UserError {
    pub what: String,
    pub hint: Option<String>,
}

impl UserError {
    pub fn new(what: impl Into<String>) -> Self {
        UserError {
            what: what.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// An error and its causes as one text: each message joined with ": ", each said once
/// (a message that an earlier one already contains, as when an error of another crate
/// repeats its source, is left out). Errors of this crate say what failed and leave
/// the why to their `source`; this is where the two meet, wherever an error reaches a
/// user (the API's answers, the CNI plugin's, the daemon's log, [`one_line`]).
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut parts = Vec::new();
    for cause in std::iter::successors(Some(err), |&e| e.source()) {
        push_once(&mut parts, cause.to_string());
    }
    parts.join(": ")
}

/// Adds `text` to `parts` unless one of them says it already.
fn push_once(parts: &mut Vec<String>, text: String) {
    if !parts.iter().any(|p| p.contains(&text)) {
        parts.push(text);
    }
}

/// What the user can do about `cause`, if it says: a [`UserError`]'s hint, or that of
/// an error of the daemon or of `reset` (which hold their refusals as variants).
fn hint_of(cause: &(dyn Error + 'static)) -> Option<String> {
    if let Some(u) = cause.downcast_ref::<UserError>() {
        return u.hint.clone();
    }
    if let Some(e) = cause.downcast_ref::<DaemonError>() {
        return e.hint();
    }
    cause
        .downcast_ref::<ResetError>()
        .and_then(ResetError::hint)
}

/// The program the kernel's verifier rejected and its log, if `cause` is that failure
/// (itself, or wrapped by the daemon's start-up, which passes it on transparently).
fn rejected_program<'a>(cause: &'a (dyn Error + 'static)) -> Option<(&'static str, &'a str)> {
    let datapath = match cause.downcast_ref::<DaemonError>() {
        Some(DaemonError::Open(open)) => match open.as_ref() {
            OpenError::Service(ServiceError::Datapath(e)) => e,
            _ => return None,
        },
        _ => cause.downcast_ref::<DatapathError>()?,
    };
    match datapath {
        DatapathError::Verifier { program, detail } => Some((program, detail)),
        _ => None,
    }
}

/// Renders any error as exactly one line: the error chain joined with ": " (as
/// [`chain`]), then the first hint in the chain (of a [`UserError`], of a refusal of
/// the daemon or of `reset`, or of a known kernel failure). Multi-line details (a
/// verifier log) are saved to a file and referenced instead.
pub fn one_line(err: &(dyn Error + 'static)) -> String {
    let mut hint = None;
    let mut parts: Vec<String> = Vec::new();
    for cause in std::iter::successors(Some(err), |&e| e.source()) {
        hint = hint.or_else(|| hint_of(cause));
        if let Some((program, detail)) = rejected_program(cause) {
            let path = std::env::temp_dir().join(format!("netpath-verifier-{program}.log"));
            let saved = std::fs::write(&path, detail).is_ok();
            let first = detail.lines().next().unwrap_or_default();
            parts.push(format!(
                "the kernel rejected eBPF program {program} ({first})"
            ));
            hint = hint.or(Some(if saved {
                format!(
                    "netpath needs Linux ≥ 6.6 with BPF and BTF; the verifier log is in {}",
                    path.display()
                )
            } else {
                "netpath needs Linux ≥ 6.6 with BPF and BTF".into()
            }));
            break;
        }
        push_once(&mut parts, cause.to_string());
    }
    let mut line = parts.join(": ").replace('\n', " ");
    if let Some(h) = hint {
        line.push_str(" — ");
        line.push_str(&h);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{control::ServiceError, netlink::NetlinkError};

    /// An error with a message and maybe a source, as deep as a test needs.
    #[derive(Debug, thiserror::Error)]
    #[error("{msg}")]
    struct Layer {
        msg: String,
        #[source]
        source: Option<Box<dyn Error + Send + Sync>>,
    }

    fn layer(msg: &str, source: impl Into<Box<dyn Error + Send + Sync>>) -> Layer {
        Layer {
            msg: msg.into(),
            source: Some(source.into()),
        }
    }

    fn leaf(msg: &str) -> Layer {
        Layer {
            msg: msg.into(),
            source: None,
        }
    }

    #[test]
    fn a_chain_is_each_message_joined() {
        assert_eq!(chain(&layer("a", layer("b", leaf("c")))), "a: b: c");
        assert_eq!(chain(&leaf("a")), "a");
    }

    #[test]
    fn a_message_repeated_down_the_chain_appears_once() {
        // Errors of other crates often print their source and also return it.
        assert_eq!(chain(&layer("a", layer("b: c", leaf("c")))), "a: b: c");
        assert_eq!(chain(&layer("a", leaf("a"))), "a");
    }

    #[test]
    fn a_transparent_wrapper_adds_nothing() {
        let e = ServiceError::Netlink(NetlinkError {
            op: "add address",
            target: "np-x".into(),
            source: std::io::Error::from_raw_os_error(libc::EEXIST),
        });
        assert_eq!(e.to_string(), "netlink add address np-x");
        assert_eq!(
            chain(&e),
            "netlink add address np-x: File exists (os error 17)"
        );
    }

    #[test]
    fn user_error_with_context_is_one_line_with_hint() {
        let e = layer(
            "starting the daemon",
            UserError::new("bpffs missing").hint("mount it"),
        );
        assert_eq!(
            one_line(&e),
            "starting the daemon: bpffs missing — mount it"
        );
    }

    #[test]
    fn a_refusal_of_the_daemon_carries_its_hint() {
        let e = DaemonError::Locked {
            pid: "42".into(),
            state_dir: "/var/lib/netpath".into(),
        };
        assert_eq!(
            one_line(&e),
            "another netpath daemon (pid 42) already uses /var/lib/netpath — stop it first, \
             or pass a different --state-dir"
        );
        assert_eq!(
            one_line(&ResetError::DaemonRunning),
            "the netpath daemon is running on this state directory — stop it (Ctrl-C or \
             SIGTERM), then run netpath reset again"
        );
    }

    #[test]
    fn a_rejected_program_is_one_line_and_the_log_is_saved() {
        // As the daemon reports it: start-up wraps the datapath's error transparently.
        let e = DaemonError::from(OpenError::Service(ServiceError::Datapath(
            DatapathError::Verifier {
                program: "netpath_test_prog",
                detail:
                    "Permission denied (os error 13); verifier log:\n0: R1=ctx()\ninvalid access"
                        .into(),
            },
        )));
        let line = one_line(&layer("starting the daemon", e));
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with(
                "starting the daemon: the kernel rejected eBPF program netpath_test_prog \
                 (Permission denied (os error 13); verifier log:) — netpath needs Linux ≥ 6.6"
            ),
            "{line}"
        );
        let log = std::env::temp_dir().join("netpath-verifier-netpath_test_prog.log");
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("invalid access")
        );
        let _ = std::fs::remove_file(log);
    }

    #[test]
    fn a_missing_program_is_not_a_verifier_failure() {
        let e = DaemonError::from(OpenError::Service(ServiceError::Datapath(
            DatapathError::MissingProgram {
                program: "netpath_test_missing",
            },
        )));
        assert_eq!(
            one_line(&e),
            "the eBPF object has no program netpath_test_missing"
        );
        assert!(rejected_program(&e).is_none());
        assert!(
            !std::env::temp_dir()
                .join("netpath-verifier-netpath_test_missing.log")
                .exists()
        );
    }

    #[test]
    fn multi_line_messages_are_flattened() {
        assert_eq!(one_line(&leaf("first\nsecond")), "first second");
    }
}

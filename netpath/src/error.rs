//! Errors as the user sees them: one line saying what is wrong and what to do.

use crate::datapath::DatapathError;

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

/// Renders any error as exactly one line: the error chain joined with ": ", then the
/// hint of the first [`UserError`] in the chain (or of a known kernel failure).
/// Multi-line details (a verifier log) are saved to a file and referenced instead.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut hint = None;
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        if let Some(u) = cause.downcast_ref::<UserError>() {
            hint = hint.or(u.hint.clone());
        }
        if let Some(DatapathError::Verifier { program, detail }) = cause.downcast_ref() {
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
        let text = cause.to_string();
        // anyhow contexts often repeat the source's message; keep each part once.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
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

    #[test]
    fn user_error_with_context_is_one_line_with_hint() {
        let e = anyhow::Error::new(UserError::new("bpffs missing").hint("mount it"))
            .context("starting the daemon");
        assert_eq!(
            one_line(&e),
            "starting the daemon: bpffs missing — mount it"
        );
    }

    #[test]
    fn a_rejected_program_is_one_line_and_the_log_is_saved() {
        let e = anyhow::Error::new(DatapathError::Verifier {
            program: "netpath_test_prog",
            detail: "Permission denied (os error 13); verifier log:\n0: R1=ctx()\ninvalid access"
                .into(),
        })
        .context("starting the daemon");
        let line = one_line(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains("the kernel rejected eBPF program netpath_test_prog"),
            "{line}"
        );
        assert!(line.contains("Linux ≥ 6.6"), "{line}");
        let log = std::env::temp_dir().join("netpath-verifier-netpath_test_prog.log");
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("invalid access")
        );
        let _ = std::fs::remove_file(log);
    }

    #[test]
    fn multi_line_messages_are_flattened() {
        let e = anyhow::anyhow!("first\nsecond");
        assert!(!one_line(&e).contains('\n'));
    }
}

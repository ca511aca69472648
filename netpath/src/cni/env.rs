//! The runtime's request: the command and the `CNI_*` environment, checked.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The `CNI_*` environment of one invocation, validated for its command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs.
    pub args: Vec<(String, String)>,
}

impl Env {
    /// Reads and validates the environment through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let invalid = |m: String| CniError::new(code::INVALID_ENV, m);
        let command = match var("CNI_COMMAND") {
            None => {
                return Err(invalid(
                    "CNI_COMMAND is not set: netpath-cni is a CNI plugin, run by a container runtime (ADD, DEL, CHECK, GC, STATUS or VERSION)".into(),
                ));
            }
            Some(c) => Command::parse(&c).ok_or_else(|| {
                invalid(format!(
                    "unknown CNI_COMMAND {c:?}: expected ADD, DEL, CHECK, GC, STATUS or VERSION"
                ))
            })?,
        };
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        if !per_attachment {
            // VERSION, GC and STATUS concern no attachment: libcni fills the other
            // variables with placeholders ("dummy") for them.
            return Ok(Env {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                args: Vec::new(),
            });
        }
        let non_empty = |k: &str| var(k).filter(|v| !v.is_empty());
        let not_set = |k: &str| invalid(format!("{k} is not set (required for {command:?})"));
        // A variable the command needs, checked by `validate`.
        let required = |k: &str, validate: fn(&str) -> Result<(), String>| {
            let v = non_empty(k).ok_or_else(|| not_set(k))?;
            validate(&v).map_err(invalid)?;
            Ok::<_, CniError>(v)
        };
        let container_id = required("CNI_CONTAINERID", validate_container_id)?;
        let ifname = required("CNI_IFNAME", validate_ifname)?;
        let netns = non_empty("CNI_NETNS").map(PathBuf::from);
        if netns.is_none() && matches!(command, Command::Add | Command::Check) {
            return Err(not_set("CNI_NETNS"));
        }
        if let Some(n) = &netns
            && !n.is_absolute()
        {
            return Err(invalid(format!(
                "CNI_NETNS {} is not an absolute path",
                n.display()
            )));
        }
        let args = parse_cni_args(&var("CNI_ARGS").unwrap_or_default()).map_err(invalid)?;
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }

    pub(super) fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The spec's rule: an alphanumeric, then alphanumerics, `_`, `.` and `-`.
pub(super) fn validate_container_id(id: &str) -> Result<(), String> {
    let ok = id.len() <= 1024
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid CNI_CONTAINERID {id:?}: it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
        ))
    }
}

pub(super) fn validate_ifname(name: &str) -> Result<(), String> {
    crate::types::check_ifname(name)
        .map_err(|reason| format!("invalid CNI_IFNAME {name:?}: {reason}"))
}

/// `K1=V1;K2=V2` (empty: none).
pub(super) fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!(
                "invalid CNI_ARGS {s:?}: expected KEY=VALUE pairs separated by ';'"
            )),
        })
        .collect()
}

//! `netpath-cni`: the CNI plugin binary (see [`netpath::cni`]).

use std::{
    io::{Read, Write},
    process::ExitCode,
};

use netpath::cni::{self, CniError, code};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().take(1 << 20).read_to_end(&mut stdin) {
        Err(e) => cni::Outcome {
            stdout: format!(
                "{}\n",
                CniError::new(
                    code::IO,
                    format!("cannot read the network configuration from stdin: {e}")
                )
                .to_json(cni::CNI_VERSION)
            ),
            exit_code: 1,
        },
        Ok(_) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(cni::run(|k| std::env::var(k).ok(), &stdin))
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    ExitCode::from(u8::try_from(outcome.exit_code).unwrap_or(1))
}

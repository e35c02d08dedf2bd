//! Asking a person for a password on their terminal, without echo, or
//! reading passwords from standard input (`--password-stdin`).
//!
//! Echo is switched off with `stty` on the terminal (`/dev/tty`), so no
//! unsafe code is needed, and switched back on however the prompt ends,
//! Ctrl-C included.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

use anyhow::{Context as _, anyhow};

const TTY: &str = "/dev/tty";

fn no_terminal(error: std::io::Error) -> anyhow::Error {
    anyhow!(
        "there is no terminal to ask for the password on ({TTY}: {error}); pipe it in with --password-stdin"
    )
}

/// Reads one password per name from standard input, one a line (without
/// the line break). Each must be there and not empty.
pub fn from_stdin(names: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut stdin = std::io::stdin().lock();
    let mut passwords = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let mut line = String::new();
        let read = stdin
            .read_line(&mut line)
            .context("cannot read standard input")?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        if read == 0 || password.is_empty() {
            return Err(anyhow!(
                "--password-stdin: line {} of standard input must hold the {name}, and it is {}",
                index + 1,
                if read == 0 { "missing" } else { "empty" }
            ));
        }
        passwords.push(password);
    }
    Ok(passwords)
}

/// Asks for a line on the terminal, with echo (an e-mail address).
pub fn line(prompt: &str) -> anyhow::Result<String> {
    let mut tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TTY)
        .map_err(|e| anyhow!("there is no terminal to ask on ({TTY}: {e}); give --email"))?;
    write!(tty, "{prompt}").and_then(|()| tty.flush())?;
    let mut answer = String::new();
    BufReader::new(tty).read_line(&mut answer)?;
    Ok(answer.trim().to_owned())
}

/// Asks for a password on the terminal without echoing it.
pub async fn hidden(prompt: &str) -> anyhow::Result<String> {
    let mut tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TTY)
        .map_err(no_terminal)?;
    write!(tty, "{prompt}").and_then(|()| tty.flush())?;
    let echo = EchoOff::new(&tty)?;
    let reader = tty.try_clone()?;
    let read = tokio::task::spawn_blocking(move || {
        let mut answer = String::new();
        BufReader::new(reader)
            .read_line(&mut answer)
            .map(|_| answer)
    });
    let answer = tokio::select! {
        answer = read => answer,
        _ = tokio::signal::ctrl_c() => {
            drop(echo);
            let _ = writeln!(tty);
            eprintln!("error: interrupted");
            // The blocked read cannot be cancelled; leave without it.
            std::process::exit(130);
        }
    };
    drop(echo);
    // The Enter the person typed was not echoed either.
    let _ = writeln!(tty);
    let answer = answer
        .map_err(|e| anyhow!("cannot read the password: {e}"))?
        .map_err(|e| anyhow!("cannot read the password: {e}"))?;
    let password = answer.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(anyhow!("no password given"));
    }
    Ok(password)
}

/// The terminal's echo, off while this lives.
struct EchoOff {
    tty: File,
    saved: String,
}

impl EchoOff {
    fn new(tty: &File) -> anyhow::Result<Self> {
        let saved = stty(tty, &["-g"])?;
        stty(tty, &["-echo"])?;
        Ok(Self {
            tty: tty.try_clone()?,
            saved: saved.trim().to_owned(),
        })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if stty(&self.tty, &[&self.saved]).is_err() {
            let _ = stty(&self.tty, &["echo"]);
        }
    }
}

/// Runs `stty` on the terminal; its output.
fn stty(tty: &File, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("stty")
        .args(args)
        .stdin(Stdio::from(tty.try_clone()?))
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            anyhow!("cannot switch off the terminal's echo (stty: {e}); pipe the password in with --password-stdin")
        })?;
    if !output.status.success() {
        return Err(anyhow!(
            "cannot switch off the terminal's echo (stty: {}); pipe the password in with --password-stdin",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

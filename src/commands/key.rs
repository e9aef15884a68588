//! `key list|add|remove|passwd`: restic's key management. The new password comes from
//! `--new-password-file`, or is asked for (twice) on a terminal, or read from stdin.

use super::Cx;
use super::output::short;
use crate::cli::{self, KeyCommand, NewKeyArgs};
use mover::error::{Error, Result};
use mover::ops;
use mover::repo::keys::KeyOwner;
use std::io::{BufRead, IsTerminal, Write};

pub async fn key(cx: &Cx<'_>, args: &cli::KeyArgs) -> Result<u8> {
    // The new password is read before the repository is opened, as restic does.
    let new_password = match &args.command {
        KeyCommand::Add(a) | KeyCommand::Passwd(a) => Some(new_password(a)?),
        _ => None,
    };
    let repo = cx.open().await?;
    let lock = cx.lock_options();
    match (&args.command, new_password) {
        (KeyCommand::List, _) => {
            let keys = ops::key::list(&repo).await?;
            if cx.g.json {
                println!(
                    "{}",
                    serde_json::to_string(&keys)
                        .map_err(|e| Error::Internal(format!("encoding the keys: {e}")))?
                );
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    let created = mover::format::gotime::parse(&k.created)
                        .map(|t| {
                            t.with_timezone(&chrono::Local)
                                .format(ops::snapshots::TIME_FORMAT)
                                .to_string()
                        })
                        .unwrap_or_else(|_| k.created.clone());
                    vec![
                        format!("{}{}", if k.current { "*" } else { " " }, short(&k.id)),
                        k.user_name.clone(),
                        k.host_name.clone(),
                        created,
                    ]
                })
                .collect();
            print!(
                "{}",
                ops::snapshots::render_table(
                    &[" ID", "User", "Host", "Created"],
                    &rows,
                    &[],
                    false
                )
            );
        }
        (KeyCommand::Add(a), Some(pw)) => {
            let id = ops::key::add(&repo, &pw, &owner(a), &lock).await?;
            if !cx.g.quiet {
                println!("saved new key with ID {id}");
            }
        }
        (KeyCommand::Passwd(a), Some(pw)) => {
            let id = ops::key::change_password(&repo, &pw, &owner(a), &lock).await?;
            if !cx.g.quiet {
                println!(
                    "saved new key as <Key of {}, ID {}>",
                    whoami(a),
                    short(&id.to_hex())
                );
            }
        }
        (KeyCommand::Remove { id }, _) => {
            let removed = ops::key::remove(&repo, id, &lock).await?;
            if !cx.g.quiet {
                println!("removed key {removed}");
            }
        }
        (KeyCommand::Add(_) | KeyCommand::Passwd(_), None) => {
            return Err(Error::InvalidInput("no new password given".into()));
        }
    }
    Ok(0)
}

fn owner(a: &NewKeyArgs) -> KeyOwner {
    KeyOwner {
        username: a.user.clone(),
        hostname: a.host.clone(),
    }
}

fn whoami(a: &NewKeyArgs) -> String {
    format!(
        "{}@{}",
        a.user.clone().unwrap_or_else(mover::host::current_username),
        a.host.clone().unwrap_or_else(mover::host::hostname)
    )
}

/// The new password: from the file, typed twice on a terminal, or one line of stdin. An
/// empty one is refused unless `--new-insecure-no-password` asks for it.
fn new_password(a: &NewKeyArgs) -> Result<String> {
    if a.new_insecure_no_password {
        return Ok(String::new());
    }
    let pw = if let Some(f) = &a.new_password_file {
        let raw = std::fs::read(f)
            .map_err(|e| Error::io(format!("reading new password file {}", f.display()), e))?;
        String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    } else if std::io::stdin().is_terminal() {
        let first = prompt("enter new password: ")?;
        let again = prompt("enter password again: ")?;
        if first != again {
            return Err(Error::InvalidInput("passwords do not match".into()));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::io("reading the new password from stdin", e))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if pw.is_empty() {
        return Err(Error::InvalidInput(
            "an empty password is not allowed by default; pass --new-insecure-no-password to \
             use one"
                .into(),
        ));
    }
    Ok(pw)
}

fn prompt(text: &str) -> Result<String> {
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::io("reading the new password", e))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

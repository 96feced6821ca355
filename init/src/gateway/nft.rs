//! The gateway's nftables part: which rulesets init takes from the daemon (tables of
//! [`TABLES`] only, no `include`), the one transaction that replaces those tables, and feeding
//! it to `nft -f -`. It writes no rules itself (the daemon does) and never touches a table
//! outside [`TABLES`].

use mallee_proto::gateway::TABLES;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;

/// Where the appliance carries `nft` (Debian's nftables, copied in by the image builder).
pub const NFT: &str = "/sbin/nft";
/// How much of nft's complaint goes into the answer.
const MAX_STDERR: usize = 4096;

/// Starts a command and hands back a channel that receives its exit code: through
/// [`crate::reaper`] in PID 1, with a plain `wait` in tests.
pub type Spawn = fn(&mut Command) -> std::io::Result<Receiver<i32>>;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(
        "the ruleset uses `include`, which init refuses (the daemon hands over the whole ruleset)"
    )]
    Include,
    #[error("the ruleset touches table {0:?}; the gateway owns only {TABLES:?}")]
    ForeignTable(String),
    #[error("the ruleset acts on the whole ruleset; the gateway owns only {TABLES:?}")]
    WholeRuleset,
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} exited with code {code}: {stderr}")]
    Failed {
        program: String,
        code: i32,
        stderr: String,
    },
}

/// Refuses a ruleset that could reach beyond the gateway's tables: one with the word
/// `include`, one naming a table (`table T`, `add table T`, `delete table T`, …) not in
/// [`TABLES`] (the family must be spelled out), and one acting on the whole ruleset
/// (`flush ruleset`). A simple check of the text, not a parser: nft itself judges the rest.
pub fn check_ruleset(ruleset: &str) -> Result<(), NftError> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if ruleset.split(|c| !is_word(c)).any(|w| w == "include") {
        return Err(NftError::Include);
    }
    for statement in ruleset.split(['\n', ';']) {
        let spaced = statement.replace('{', " { ").replace('}', " } ");
        let words: Vec<&str> = spaced
            .split_whitespace()
            .skip_while(|w| *w == "}")
            .collect();
        let named = match words.as_slice() {
            ["table", rest @ ..] | [_, "table", rest @ ..] => rest,
            [_, "ruleset", ..] => return Err(NftError::WholeRuleset),
            _ => continue,
        };
        let table = (named.iter())
            .take_while(|w| **w != "{")
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        if !TABLES.contains(&table.as_str()) {
            return Err(NftError::ForeignTable(table));
        }
    }
    Ok(())
}

/// The text fed to `nft -f -`: each of [`TABLES`] made sure to exist and then deleted, then the
/// ruleset. nft applies it as one transaction, so the old rules stay until the new ones are in
/// (or stay, when the new ones are refused); an empty ruleset leaves no gateway table.
pub fn transaction(ruleset: &str) -> String {
    let mut text = String::new();
    for table in TABLES {
        text += &format!("table {table}\ndelete table {table}\n");
    }
    text + ruleset
}

/// Checks `ruleset` and replaces the gateway's tables with it through `program` (`nft`).
pub fn apply(program: &Path, ruleset: &str, spawn: Spawn) -> Result<(), NftError> {
    check_ruleset(ruleset)?;
    run(program, &["-f", "-"], &transaction(ruleset), spawn)
}

/// Runs `program args` with `input` on its stdin; its stderr is the error when it fails.
pub fn run(program: &Path, args: &[&str], input: &str, spawn: Spawn) -> Result<(), NftError> {
    let name = program.display().to_string();
    let spawn_err = |source| NftError::Spawn {
        program: name.clone(),
        source,
    };
    let (stdin, mut feed) = std::io::pipe().map_err(spawn_err)?;
    let (mut complaints, stderr) = std::io::pipe().map_err(spawn_err)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(stderr)
        .env_clear()
        .current_dir("/");
    let exited = spawn(&mut command);
    drop(command); // closes our copies of the child's ends
    let exited = exited.map_err(spawn_err)?;
    // Fed from another thread: a long ruleset and a long complaint cannot block each other.
    let input = input.to_owned();
    let feeder = std::thread::spawn(move || {
        let _ = feed.write_all(input.as_bytes()); // nft may stop reading early (EPIPE)
    });
    let mut said = Vec::new();
    let _ = complaints.read_to_end(&mut said);
    let _ = feeder.join();
    let code = exited.recv().unwrap_or(-1);
    if code == 0 {
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&said).trim().to_owned();
    if stderr.len() > MAX_STDERR {
        let cut = (0..=MAX_STDERR)
            .rev()
            .find(|&i| stderr.is_char_boundary(i))
            .unwrap_or(0);
        stderr.truncate(cut);
        stderr.push_str(" …");
    }
    Err(NftError::Failed {
        program: name,
        code,
        stderr,
    })
}

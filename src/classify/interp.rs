//! Scripts run through an interpreter named on the command line: `sh
//! /tmp/x.sh`, `busybox sh x.sh`, `python3 -u /tmp/x.py`, `java -jar
//! app.jar`. The kernel sees only the interpreter (an image file); the script
//! is the operand this module finds in its argv, to be judged like a `#!`
//! script. Inline code (`-c`, `-e`, `python -m`) is not a file: none.

use super::names::NameTables;
use crate::event::{Text, basename};

/// How an interpreter family reads its command line.
struct Family {
    /// Short options whose presence means the program is not a file (inline
    /// code, a module, stdin).
    not_a_file: &'static [char],
    /// Short options that take a value (joined, or the next argument).
    with_value: &'static [char],
    /// Long options that do the same.
    long_not_a_file: &'static [&'static str],
    long_with_value: &'static [&'static str],
    /// The short option whose value is the script (`php -f x.php`).
    file_option: Option<char>,
}

const SHELL: Family = Family {
    not_a_file: &['c', 's'],
    with_value: &['o', 'O'],
    long_not_a_file: &[],
    long_with_value: &["--rcfile", "--init-file"],
    file_option: None,
};
const PYTHON: Family = Family {
    not_a_file: &['c', 'm'],
    with_value: &['W', 'X', 'Q'],
    long_not_a_file: &[],
    long_with_value: &["--check-hash-based-pycs"],
    file_option: None,
};
/// Perl's valued switches take their value joined (`-Ilib`, `-MPOSIX`).
const PERL: Family = Family {
    not_a_file: &['e', 'E'],
    with_value: &['I', 'M', 'm', 'x', 'i', 'l', '0', 'C', 'd', 'D'],
    long_not_a_file: &[],
    long_with_value: &[],
    file_option: None,
};
const RUBY: Family = Family {
    not_a_file: &['e'],
    with_value: &['I', 'r', 'C', 'E', 'x', 'F', 'T'],
    long_not_a_file: &[],
    long_with_value: &[],
    file_option: None,
};
const NODE: Family = Family {
    not_a_file: &['e', 'p'],
    with_value: &['r'],
    long_not_a_file: &["--eval", "--print", "--interactive"],
    long_with_value: &["--require", "--import", "--loader", "--experimental-loader", "--title", "--env-file"],
    file_option: None,
};
const PHP: Family = Family {
    not_a_file: &['r', 'a', 'S', 'B', 'R', 'E'],
    with_value: &['c', 'd', 'z', 't'],
    long_not_a_file: &[],
    long_with_value: &[],
    file_option: Some('f'),
};
const LUA: Family = Family {
    not_a_file: &['e', 'i'],
    with_value: &['l'],
    long_not_a_file: &[],
    long_with_value: &[],
    file_option: None,
};

/// `shell`: the tables name it a shell.
fn family(name: &str, shell: bool) -> Option<&'static Family> {
    let starts = |p: &str| name.starts_with(p);
    Some(if shell {
        &SHELL
    } else if starts("python") || starts("pypy") {
        &PYTHON
    } else if starts("perl") {
        &PERL
    } else if starts("ruby") {
        &RUBY
    } else if name == "node" || name == "nodejs" || name == "bun" || name == "deno" {
        &NODE
    } else if starts("php") {
        &PHP
    } else if starts("lua") || starts("luajit") {
        &LUA
    } else {
        return None;
    })
}

/// The script operand of `args` (argv, the interpreter first) per `f`.
fn operand<'a>(f: &Family, args: &'a [Text]) -> Option<&'a str> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            return args.get(i + 1).map(Text::as_str).filter(|s| *s != "-");
        }
        if a == "-" {
            return None; // stdin
        }
        if let Some(long) = a.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            let opt = &a[..2 + name.len()];
            if f.long_not_a_file.contains(&opt) {
                return None;
            }
            i += if f.long_with_value.contains(&opt) && !long.contains('=') { 2 } else { 1 };
            continue;
        }
        let Some(cluster) = a.strip_prefix('-').or_else(|| a.strip_prefix('+')) else {
            return Some(a);
        };
        // A cluster of short switches: `-ec`, `-uW error`, `-Ilib`.
        let mut skip_next = false;
        for (at, c) in cluster.char_indices() {
            if f.not_a_file.contains(&c) {
                return None;
            }
            if f.file_option == Some(c) {
                let rest = &cluster[at + c.len_utf8()..];
                return if rest.is_empty() { args.get(i + 1).map(Text::as_str) } else { Some(rest) };
            }
            if f.with_value.contains(&c) {
                skip_next = cluster[at + c.len_utf8()..].is_empty();
                break;
            }
        }
        i += if skip_next { 2 } else { 1 };
    }
    None
}

/// `java [options] -jar FILE`: the archive is the program.
fn java_jar(args: &[Text]) -> Option<&str> {
    let at = args.iter().position(|a| a == "-jar")?;
    args.get(at + 1).map(Text::as_str)
}

/// `env [-i] [-u NAME] [NAME=VALUE]... program args...`: the program's argv.
fn env_program(args: &[Text]) -> Option<&[Text]> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "-u" || a == "-C" || a == "-S" || a == "--unset" || a == "--chdir" {
            i += 2;
        } else if a.starts_with('-') || a.contains('=') {
            i += 1;
        } else {
            return Some(&args[i..]);
        }
    }
    None
}

/// The script that the interpreter exec `comm` (argv `args`) runs from a
/// file, as named on its command line (maybe relative to its cwd). None for
/// inline code, stdin, a module, or a program that is not a known
/// interpreter (the configured `rules.interpreters` and shells).
pub fn script_operand<'a>(tables: &NameTables, comm: &str, args: &'a [Text]) -> Option<&'a str> {
    script_operand_at(tables, comm, args, 0)
}

fn script_operand_at<'a>(tables: &NameTables, comm: &str, args: &'a [Text], depth: u8) -> Option<&'a str> {
    // argv[0] names the program better than comm (cut at 15 bytes); a `#!`
    // script's comm is its own name, and the kernel judged those already.
    let name = args.first().map_or(comm, |a| basename(a));
    let kind = tables.kind(name);
    if depth > 2 || !(kind.interpreter() || kind.shell()) {
        return None;
    }
    let script = match name {
        "busybox" => {
            // `busybox sh x.sh`: the applet's own command line.
            let applet = args.get(1).map(|a| basename(a))?;
            if !tables.is_shell(applet) {
                return None;
            }
            operand(&SHELL, &args[1..])
        }
        "env" => {
            let rest = env_program(args)?;
            return script_operand_at(tables, basename(&rest[0]), rest, depth + 1);
        }
        "java" => java_jar(args),
        _ => operand(family(name, kind.shell())?, args),
    }?;
    (!script.is_empty()).then_some(script)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn op(args: &[&str]) -> Option<String> {
        let t = NameTables::from_rules(&Config::default().rules);
        let args: Vec<Text> = args.iter().map(|&s| Text::from(s)).collect();
        script_operand(&t, basename(&args[0]), &args).map(str::to_string)
    }

    #[test]
    fn scripts_are_found_after_options() {
        for (args, want) in [
            (&["sh", "/tmp/x.sh"][..], "/tmp/x.sh"),
            (&["/bin/bash", "-x", "-o", "pipefail", "x.sh", "a"], "x.sh"),
            (&["bash", "--rcfile", "/etc/rc", "/tmp/x.sh"], "/tmp/x.sh"),
            (&["dash", "-e", "--", "/tmp/x.sh"], "/tmp/x.sh"),
            (&["busybox", "sh", "/tmp/x.sh"], "/tmp/x.sh"),
            (&["busybox", "ash", "-x", "/tmp/x.sh"], "/tmp/x.sh"),
            (&["python3", "-u", "-W", "error", "/tmp/x.py", "-c"], "/tmp/x.py"),
            (&["python3.11", "-Werror", "x.py"], "x.py"),
            (&["perl", "-Ilib", "-w", "/tmp/x.pl"], "/tmp/x.pl"),
            (&["perl", "-MPOSIX", "/tmp/x.pl"], "/tmp/x.pl"),
            (&["ruby", "-r", "json", "/tmp/x.rb"], "/tmp/x.rb"),
            (&["node", "--require=x", "--inspect", "/tmp/x.js"], "/tmp/x.js"),
            (&["node", "-r", "dotenv/config", "/tmp/x.js"], "/tmp/x.js"),
            (&["php", "-d", "x=1", "/tmp/x.php"], "/tmp/x.php"),
            (&["php", "-f", "/tmp/x.php"], "/tmp/x.php"),
            (&["lua", "-l", "socket", "/tmp/x.lua"], "/tmp/x.lua"),
            (&["java", "-Xmx1g", "-jar", "/tmp/x.jar"], "/tmp/x.jar"),
            (&["env", "-i", "A=1", "python3", "/tmp/x.py"], "/tmp/x.py"),
        ] {
            assert_eq!(op(args).as_deref(), Some(want), "{args:?}");
        }
    }

    #[test]
    fn inline_code_stdin_and_modules_are_not_files() {
        for args in [
            &["sh", "-c", "/tmp/x.sh"][..],
            &["sh", "-ec", "id"],
            &["sh", "-s", "x"],
            &["sh"],
            &["sh", "-"],
            &["busybox", "sh", "-c", "id"],
            &["busybox", "ls", "/tmp/x"],
            &["python3", "-c", "print(1)"],
            &["python3", "-uc", "print(1)"],
            &["python3", "-m", "http.server"],
            &["perl", "-e", "print 1"],
            &["perl", "-ne", "print"],
            &["ruby", "-e", "p 1"],
            &["node", "-e", "1"],
            &["node", "--eval=1"],
            &["php", "-r", "echo 1;"],
            &["lua", "-e", "x=1"],
            &["java", "-cp", "/tmp", "Main"],
            &["ls", "/tmp/x.sh"],
            &["sh", ""],
        ] {
            assert_eq!(op(args), None, "{args:?}");
        }
    }

    #[test]
    fn perl_switch_values_are_not_read_as_switches() {
        // "-I/home/e" holds an `e`, which is not -e.
        assert_eq!(op(&["perl", "-I/home/e", "/tmp/x.pl"]).as_deref(), Some("/tmp/x.pl"));
    }
}

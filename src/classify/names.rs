//! Program-name tables compiled from the config: shells, package managers,
//! interpreters. Also exported to the kernel's `exec_names` filter map.

use crate::{
    abi,
    config::Rules,
    event::{Text, basename},
};
use rustc_hash::{FxHashMap, FxHashSet};
use std::{collections::HashMap, sync::Arc};

/// What an exec is, judged by its name and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    /// A shell; `via` names the wrapper (busybox) when there was one.
    /// The table's own name when the comm is one (shared, not copied: a
    /// storm's shells allocate nothing for it).
    Shell { name: Arc<str> },
    /// A package manager; `name` is the manager ("pip", "apt-get", "go install"):
    /// inline text, no heap allocation for the names the tables know.
    Package { name: Text },
}

/// What a program name is in the tables, all at once: an exec's names were
/// looked up in four sets, up to eight times an exec (~80 instructions
/// each); one lookup now answers every question about a name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameKind(u8);

impl NameKind {
    const SHELL: u8 = 1;
    const PACKAGE: u8 = 2;
    /// A package manager only with a listed subcommand (`go install`).
    const SUBCOMMANDS: u8 = 4;
    const INTERPRETER: u8 = 8;

    pub fn shell(self) -> bool {
        self.0 & Self::SHELL != 0
    }

    pub fn interpreter(self) -> bool {
        self.0 & Self::INTERPRETER != 0
    }

    fn package(self) -> bool {
        self.0 & Self::PACKAGE != 0
    }

    fn manager(self) -> bool {
        self.0 & (Self::PACKAGE | Self::SUBCOMMANDS) != 0
    }
}

/// A name's kind, and the table's own text of it when it is a shell (shared
/// into findings, never copied).
#[derive(Debug, Clone, Default)]
struct Entry {
    kind: NameKind,
    shell: Option<Arc<str>>,
}

/// FxHash: every exec is looked up, and the tables are fixed when the config
/// loads, so names chosen inside a container can only be looked up, never
/// fill a bucket (SipHash was 5% of a shell finding's instructions).
#[derive(Debug, Clone, Default)]
pub struct NameTables {
    /// Every configured name: shells, package managers, interpreters.
    names: FxHashMap<Box<str>, Entry>,
    subcommands: FxHashMap<String, FxHashSet<String>>,
}

/// The comm the kernel would record for a name (TASK_COMM_LEN - 1 bytes).
fn comm_of(name: &str) -> &str {
    crate::escape::cut(name, crate::config::COMM_MAX)
}

impl NameTables {
    pub fn from_rules(r: &Rules) -> Self {
        let mut names: FxHashMap<Box<str>, Entry> = FxHashMap::default();
        let mut add = |n: &str, bit: u8| names.entry(n.into()).or_default().kind.0 |= bit;
        r.package.names.iter().for_each(|n| add(n, NameKind::PACKAGE));
        r.package.subcommands.keys().for_each(|n| add(n, NameKind::SUBCOMMANDS));
        r.interpreters.iter().for_each(|n| add(n, NameKind::INTERPRETER));
        for n in &r.shell.names {
            let e = names.entry(n.as_str().into()).or_default();
            e.kind.0 |= NameKind::SHELL;
            e.shell = Some(Arc::from(n.as_str()));
        }
        Self {
            names,
            subcommands: r.package.subcommands.iter().map(|(k, v)| (k.clone(), v.iter().cloned().collect())).collect(),
        }
    }

    /// What `name` (by its basename) is in the tables.
    pub fn kind(&self, name: &str) -> NameKind {
        self.names.get(basename(name)).map(|e| e.kind).unwrap_or_default()
    }

    pub fn is_shell(&self, name: &str) -> bool {
        self.kind(name).shell()
    }

    pub fn is_package(&self, name: &str) -> bool {
        self.kind(name).package()
    }

    /// Entries for the kernel filter map: comm -> DW_NAME_* bits.
    pub fn kernel_entries(&self) -> HashMap<String, u32> {
        let mut m: HashMap<String, u32> = HashMap::new();
        for (name, e) in &self.names {
            let mut bits = 0;
            if e.kind.shell() {
                // A shell can also run a package-manager script: "sh /usr/bin/apt-get".
                bits |= abi::DW_NAME_SHELL | abi::DW_NAME_INTERPRETER;
            }
            if e.kind.package() {
                bits |= abi::DW_NAME_PACKAGE;
            }
            if e.kind.interpreter() || e.kind.0 & NameKind::SUBCOMMANDS != 0 {
                bits |= abi::DW_NAME_INTERPRETER;
            }
            *m.entry(comm_of(name).to_string()).or_default() |= bits;
        }
        m
    }

    /// Classifies an exec by the kernel's comm (the basename of the executed
    /// path, or of the script for `#!` scripts) and its argv. Package managers
    /// win over shells: `sh /usr/bin/apt-get` is package drift.
    pub fn classify(&self, comm: &str, args: &[Text]) -> Option<NameMatch> {
        let name = basename(comm);
        let entry = self.names.get(name);
        if let Some(pkg) = self.package_in(name, entry.map(|e| e.kind).unwrap_or_default(), args) {
            return Some(NameMatch::Package { name: pkg });
        }
        if let Some(shell) = entry.and_then(|e| e.shell.as_ref()) {
            // A comm with a `/` in it (prctl) keeps its whole text.
            let name = if shell.len() == comm.len() { shell.clone() } else { Arc::from(comm) };
            return Some(NameMatch::Shell { name });
        }
        // busybox acting as a shell: "busybox sh", "busybox ash -c ...".
        if comm == "busybox"
            && let Some(applet) = args.get(1)
            && self.is_shell(applet)
        {
            return Some(NameMatch::Shell { name: Arc::from(format!("busybox {}", basename(applet))) });
        }
        None
    }

    /// `name` is a package manager run with `rest` as its arguments: always
    /// for plain managers, only with a listed subcommand for the others.
    fn manager(&self, name: &str, rest: &[Text]) -> Option<Text> {
        let kind = self.names.get(name)?.kind;
        if kind.package() {
            return Some(name.into());
        }
        let subs = self.subcommands.get(name)?;
        let sub = rest.iter().find(|a| !a.starts_with('-'))?;
        subs.contains(sub.as_str()).then(|| compact_str::format_compact!("{name} {sub}"))
    }

    /// The package manager `name` (a basename, of kind `kind`) runs with `args`, if any.
    fn package_in(&self, name: &str, kind: NameKind, args: &[Text]) -> Option<Text> {
        if kind.manager() {
            // A `#!` script run directly (`pip install x`, pip being a Python
            // script) reaches us with the interpreter's argv, `[python3,
            // /usr/bin/pip, install, x]`: its own arguments follow its path.
            let rest = match args {
                [interp, script, rest @ ..] if basename(script) == name && basename(interp) != name => rest,
                [_, rest @ ..] => rest,
                [] => &[],
            };
            return self.manager(name, rest);
        }
        if !(kind.interpreter() || kind.shell()) {
            return None;
        }
        // Interpreter: "-m pip" names a module; otherwise the first operand is
        // the script ("python3 /usr/bin/pip", "sh ./apt-get", "env apt-get").
        let mut i = 1;
        while i < args.len() {
            let a = args[i].as_str();
            if a == "-m" || (a.starts_with("-m") && a.len() > 2) {
                let (module, rest_at) = if a == "-m" { (args.get(i + 1)?.as_str(), i + 2) } else { (&a[2..], i + 1) };
                let module = module.split('.').next().unwrap_or(module);
                return self.manager(module, args.get(rest_at..).unwrap_or_default());
            }
            if a == "-c" || a == "-e" {
                return None; // inline code: not a script path
            }
            if a.starts_with('-') {
                i += 1;
                continue;
            }
            let script = basename(a);
            if let Some(m) = self.manager(script, &args[i + 1..]) {
                return Some(m);
            }
            if name == "busybox" || name == "env" {
                // "busybox sh /usr/bin/pip": look one level further.
                return self.package_in(script, self.kind(script), &args[i..]);
            }
            return None;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn t() -> NameTables {
        NameTables::from_rules(&Config::default().rules)
    }

    fn a(v: &[&str]) -> Vec<Text> {
        v.iter().map(|&s| Text::from(s)).collect()
    }

    #[test]
    fn shells() {
        let t = t();
        for s in ["sh", "bash", "dash", "zsh", "ash", "ksh", "csh", "tcsh", "fish"] {
            assert_eq!(t.classify(s, &a(&[s])), Some(NameMatch::Shell { name: s.into() }), "{s}");
        }
        assert_eq!(
            t.classify("busybox", &a(&["busybox", "sh", "-c", "id"])),
            Some(NameMatch::Shell { name: "busybox sh".into() })
        );
        assert_eq!(t.classify("busybox", &a(&["busybox", "ls"])), None);
        assert_eq!(t.classify("ls", &a(&["ls", "-l"])), None);
        assert_eq!(t.classify("shx", &a(&["shx"])), None);
        // The table's name is shared, not copied; a comm with a `/` keeps its text.
        let name = |comm: &str| match t.classify(comm, &a(&[comm])) {
            Some(NameMatch::Shell { name }) => name,
            other => panic!("{comm}: {other:?}"),
        };
        assert!(Arc::ptr_eq(&name("bash"), &name("bash")));
        assert_eq!(&*name("x/bash"), "x/bash");
    }

    #[test]
    fn package_managers_by_name() {
        let t = t();
        for p in ["apt", "apt-get", "dpkg", "yum", "dnf", "rpm", "microdnf", "apk"] {
            assert_eq!(t.classify(p, &a(&[p, "install", "x"])), Some(NameMatch::Package { name: p.into() }), "{p}");
            assert_eq!(t.classify(p, &a(&[p])), Some(NameMatch::Package { name: p.into() }), "{p}");
        }
        for p in ["pip", "pip3", "npm", "yarn", "gem", "conda"] {
            let want = Some(NameMatch::Package { name: format!("{p} install").into() });
            assert_eq!(t.classify(p, &a(&[p, "install", "x"])), want, "{p}");
        }
        // Running an app through a package manager is not package drift.
        assert_eq!(t.classify("npm", &a(&["npm", "start"])), None);
        assert_eq!(t.classify("npm", &a(&["npm", "run", "build"])), None);
        assert_eq!(t.classify("pip", &a(&["pip", "freeze"])), None);
        assert_eq!(
            t.classify("npm", &a(&["npm", "-g", "install", "x"])),
            Some(NameMatch::Package { name: "npm install".into() })
        );
    }

    #[test]
    fn package_managers_by_subcommand() {
        let t = t();
        assert_eq!(
            t.classify("go", &a(&["go", "install", "example.com/x@latest"])),
            Some(NameMatch::Package { name: "go install".into() })
        );
        assert_eq!(t.classify("go", &a(&["go", "build", "./..."])), None);
        assert_eq!(
            t.classify("cargo", &a(&["cargo", "install", "ripgrep"])),
            Some(NameMatch::Package { name: "cargo install".into() })
        );
        assert_eq!(t.classify("cargo", &a(&["cargo", "build"])), None);
    }

    #[test]
    fn package_managers_through_interpreters() {
        let t = t();
        let pkg = |n: &str| Some(NameMatch::Package { name: n.into() });
        assert_eq!(t.classify("python3", &a(&["python3", "-m", "pip", "install", "x"])), pkg("pip install"));
        assert_eq!(t.classify("python3.11", &a(&["python3.11", "-mpip", "install"])), pkg("pip install"));
        assert_eq!(t.classify("python3", &a(&["python3", "-m", "pip", "list"])), None);
        assert_eq!(t.classify("python3", &a(&["python3", "/usr/bin/pip3", "install"])), pkg("pip3 install"));
        assert_eq!(t.classify("python3", &a(&["python3", "-u", "/usr/local/bin/pip", "install"])), pkg("pip install"));
        assert_eq!(t.classify("sh", &a(&["sh", "/usr/bin/apt-get", "install", "curl"])), pkg("apt-get"));
        assert_eq!(t.classify("node", &a(&["node", "/usr/lib/node_modules/npm/bin/npm-cli.js"])), None);
        assert_eq!(t.classify("node", &a(&["node", "/usr/bin/npm", "i"])), pkg("npm i"));
        assert_eq!(t.classify("node", &a(&["node", "/usr/bin/npm", "start"])), None);
        assert_eq!(t.classify("busybox", &a(&["busybox", "sh", "/usr/bin/pip", "install"])), pkg("pip install"));
        assert_eq!(t.classify("env", &a(&["env", "apt-get", "update"])), pkg("apt-get"));
        // A #! script run directly: comm is the script's name, argv the interpreter's.
        assert_eq!(
            t.classify("pip", &a(&["/usr/bin/python3", "/usr/local/bin/pip", "install", "x"])),
            pkg("pip install")
        );
        assert_eq!(t.classify("npm", &a(&["/usr/bin/node", "/usr/bin/npm", "ci"])), pkg("npm ci"));
        assert_eq!(t.classify("pip", &a(&["/usr/bin/python3", "/usr/local/bin/pip", "list"])), None);
        assert_eq!(t.classify("pip", &a(&["pip", "install", "x"])), pkg("pip install"));
        // Not package managers:
        assert_eq!(t.classify("python3", &a(&["python3", "-c", "import pip"])), None);
        assert_eq!(t.classify("python3", &a(&["python3", "app.py"])), None);
        assert_eq!(t.classify("python3", &a(&["python3", "-m", "http.server"])), None);
        // A shell running a normal script is still a shell.
        assert_eq!(t.classify("sh", &a(&["sh", "/start.sh"])), Some(NameMatch::Shell { name: "sh".into() }));
    }

    #[test]
    fn kernel_entries_cover_every_class() {
        let m = t().kernel_entries();
        assert_eq!(m["sh"] & abi::DW_NAME_SHELL, abi::DW_NAME_SHELL);
        assert_eq!(m["apt-get"], abi::DW_NAME_PACKAGE);
        assert_eq!(m["python3"], abi::DW_NAME_INTERPRETER);
        assert_eq!(m["go"], abi::DW_NAME_INTERPRETER);
        assert!(m.keys().all(|k| k.len() <= 15));
    }
}

use super::*;

fn all() -> Redactor {
    Redactor::new(&Spec { builtins: BUILTINS.to_vec(), ..Default::default() }).unwrap()
}

fn with(spec: Spec) -> Redactor {
    Redactor::new(&spec).unwrap()
}

/// `s` redacted by `r`.
fn text(r: &Redactor, s: &str) -> String {
    let mut s = s.to_string();
    r.redact_text(&mut s);
    s
}

fn args(r: &Redactor, a: &[&str], truncated: bool) -> Vec<Text> {
    let mut v: Vec<Text> = a.iter().map(|&s| s.into()).collect();
    r.redact_args(&mut v, truncated);
    v
}

/// Every case of `cases` becomes its expected text (positive) or stays (negative).
fn check(r: &Redactor, cases: &[(&str, &str)]) {
    for (input, want) in cases {
        assert_eq!(text(r, input), *want, "{input}");
    }
}

fn unchanged(r: &Redactor, inputs: &[&str]) {
    for input in inputs {
        assert_eq!(text(r, input), *input, "{input} must not be redacted");
    }
}

fn hits(r: &Redactor, s: &str) -> Vec<String> {
    let mut s = s.to_string();
    r.redact_text(&mut s).iter().map(|i| r.labels()[i].clone()).collect()
}

#[test]
fn password_flags_keep_the_flag() {
    let r = all();
    check(
        &r,
        &[
            ("mysql --password=hunter2 -h db", "mysql --password=[REDACTED] -h db"),
            ("mysql --password hunter2 -h db", "mysql --password [REDACTED] -h db"),
            ("app --db-password=x --db_PASSWORD y", "app --db-password=[REDACTED] --db_PASSWORD [REDACTED]"),
            ("keytool -keystorepassword changeit", "keytool -keystorepassword [REDACTED]"),
            (
                "x --client-secret s1 --api-key k1 --token t1",
                "x --client-secret [REDACTED] --api-key [REDACTED] --token [REDACTED]",
            ),
            (
                "x --secret-key=k --access_key k2 --passphrase p",
                "x --secret-key=[REDACTED] --access_key [REDACTED] --passphrase [REDACTED]",
            ),
            ("x --password=\"hunter 2\" y", "x --password=[REDACTED] y"),
            // The closing quote goes with the value: a password may hold quotes.
            ("sh -c 'mysql --password=hunter2'", "sh -c 'mysql --password=[REDACTED]"),
            ("x --password=ab\"c'd y", "x --password=[REDACTED] y"),
            ("x --password -x9", "x --password [REDACTED]"),
            ("curl --user alice:pw https://h/", "curl --user alice:[REDACTED] https://h/"),
            ("curl --proxy-user=bob:pw2 h", "curl --proxy-user=bob:[REDACTED] h"),
        ],
    );
    assert_eq!(hits(&r, "mysql --password hunter2"), ["password_flag"]);
}

#[test]
fn flags_that_are_not_secrets() {
    // --password-file names a file (the secret is in it, not on the command
    // line): kept, like every flag whose name only starts with a key word.
    unchanged(
        &all(),
        &[
            "psql --password-file=/run/secrets/pw",
            "psql --password-file /run/secrets/pw",
            "docker login --password-stdin -u me",
            "pg_dump --no-password db",
            "mysql --password - db",
            "mysql --password --verbose",
            "tool --tokens 5 --token-file /t --secret-name s --api-key-file f",
            "mysql -p hunter2 -phunter2",
            "curl --user alice https://h/",
            "ls --passwordless",
        ],
    );
}

#[test]
fn separate_argument_is_redacted_whole() {
    let r = all();
    assert_eq!(
        args(&r, &["mysql", "--password", "hunter 2", "db"], false),
        ["mysql", "--password", "[REDACTED]", "db"],
        "the value is the whole next argument, spaces included"
    );
    assert_eq!(args(&r, &["mysql", "--password=hunter2", "db"], false), ["mysql", "--password=[REDACTED]", "db"]);
    assert_eq!(
        args(&r, &["sh", "-c", "mysql --password hunter2 -h db && curl -H 'Authorization: Bearer xyz' h"], false),
        ["sh", "-c", "mysql --password [REDACTED] -h db && curl -H 'Authorization: Bearer [REDACTED]' h"]
    );
    // The flag is the last argument: nothing follows to redact.
    assert_eq!(args(&r, &["mysql", "--password"], false), ["mysql", "--password"]);
}

#[test]
fn assignments() {
    let r = all();
    check(
        &r,
        &[
            ("env token=abc x", "env token=[REDACTED] x"),
            (
                "api_key=k1 secret=s1 passwd=p1 password=p2",
                "api_key=[REDACTED] secret=[REDACTED] passwd=[REDACTED] password=[REDACTED]",
            ),
            (
                "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY aws s3 ls",
                "AWS_SECRET_ACCESS_KEY=[REDACTED] aws s3 ls",
            ),
            ("AWS_SESSION_TOKEN=FQoG x", "AWS_SESSION_TOKEN=[REDACTED] x"),
            (
                "java -Djavax.net.ssl.keyStorePassword=changeit -jar a",
                "java -Djavax.net.ssl.keyStorePassword=[REDACTED] -jar a",
            ),
            ("curl https://h/cb?access_token=abc&state=1", "curl https://h/cb?access_token=[REDACTED]&state=1"),
            ("X='password=\"a b\"'", "X='password=[REDACTED]'"),
            ("token=ab'c\"d&x=1", "token=[REDACTED]&x=1"),
            (
                "curl -d '{\"user\":\"a\",\"password\":\"hun\\\"ter\"}'",
                "curl -d '{\"user\":\"a\",\"password\":\"[REDACTED]\"}'",
            ),
            ("{\"apiKey\": \"k\"}", "{\"apiKey\": \"[REDACTED]\"}"),
        ],
    );
    assert_eq!(hits(&r, "token=abc"), ["secret_assignment"]);
}

#[test]
fn assignments_that_are_not_secrets() {
    unchanged(
        &all(),
        &[
            "train tokenizer=1",
            "TOKEN_URL=https://auth/token x",
            "PWD=/root HOME=/root",
            "password= x",
            "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
            "max_tokens=5 secrets=3",
            "{\"password_policy\":\"strict\"}",
        ],
    );
}

#[test]
fn url_credentials_keep_the_user() {
    let r = all();
    check(
        &r,
        &[
            ("git clone https://user:pass@host/repo", "git clone https://user:[REDACTED]@host/repo"),
            ("psql postgres://app:s3:cr3t@db:5432/x", "psql postgres://app:[REDACTED]@db:5432/x"),
            ("redis-cli -u redis://:pw@cache:6379", "redis-cli -u redis://:[REDACTED]@cache:6379"),
            ("https://u:p@h/ and ftp://a:b@c", "https://u:[REDACTED]@h/ and ftp://a:[REDACTED]@c"),
            ("'https://u:pa\"ss@h/'", "'https://u:[REDACTED]@h/'"),
        ],
    );
    // No password: a port, a user without one (documented: a token as the
    // user name is found only by token_formats).
    unchanged(
        &r,
        &["curl http://host:8080/path?a=b", "git clone ssh://git@github.com/x", "https://me@h/", "http://h:80"],
    );
    assert_eq!(hits(&r, "https://u:p@h/"), ["url_credentials"]);
}

#[test]
fn a_cut_command_line_still_hides_a_url_password() {
    let r = all();
    // The kernel cut argv inside the password: there is no '@' left.
    assert_eq!(args(&r, &["curl", "https://user:sec"], true), ["curl", "https://user:[REDACTED]"]);
    assert_eq!(args(&r, &["curl", "https://user:sec"], false), ["curl", "https://user:sec"], "not cut: a port");
}

#[test]
fn authorization_headers_keep_the_scheme() {
    let r = all();
    check(
        &r,
        &[
            ("curl -H 'Authorization: Bearer xyz' h", "curl -H 'Authorization: Bearer [REDACTED]' h"),
            ("curl -H authorization:Basic dXNlcjpwYXNz h", "curl -H authorization:Basic [REDACTED] h"),
            ("Proxy-Authorization: token abc", "Proxy-Authorization: token [REDACTED]"),
            (
                "curl -H \"X-Api-Key: k1\" -H 'PRIVATE-TOKEN: glx'",
                "curl -H \"X-Api-Key: [REDACTED]\" -H 'PRIVATE-TOKEN: [REDACTED]'",
            ),
            ("curl -H 'Cookie: sid=abc; theme=dark' https://h/", "curl -H 'Cookie: [REDACTED]' https://h/"),
        ],
    );
    unchanged(&r, &["Authorization-Mode: rbac", "echo authorization"]);
    assert_eq!(hits(&r, "Authorization: Bearer xyz"), ["authorization_header"]);
}

#[test]
fn well_known_token_formats() {
    let r = all();
    let gh = format!("ghp_{}", "a1B2".repeat(9));
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    assert_eq!(text(&r, &format!("git push {gh}")), "git push [REDACTED]");
    assert_eq!(text(&r, &format!("x {jwt} y")), "x [REDACTED] y");
    assert_eq!(text(&r, "vault login hvs.CAESIJ0aBcDeFgHiJkLmNoPqRsT"), "vault login [REDACTED]");
    unchanged(&r, &["ghp_short", "xghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "eyJhbGciOiJIUzI1NiJ9"]);
    assert_eq!(hits(&r, &gh), ["token_formats"]);
}

#[test]
fn overlapping_patterns_give_one_marker_and_count_each() {
    let r = all();
    let mut s = "--token=abc".to_string();
    let h = r.redact_text(&mut s);
    assert_eq!(s, "--token=[REDACTED]");
    let labels: Vec<&str> = h.iter().map(|i| r.labels()[i].as_str()).collect();
    assert_eq!(labels, ["password_flag", "secret_assignment"]);
}

#[test]
fn builtins_can_be_turned_off() {
    let r = with(Spec { builtins: vec!["password_flag"], ..Default::default() });
    unchanged(&r, &["https://u:p@h/", "token=abc", "Authorization: Bearer x"]);
    assert_eq!(text(&r, "--password x"), "--password [REDACTED]");
    let none = with(Spec::default());
    unchanged(&none, &["--password x", "https://u:p@h/"]);
    assert!(none.labels().is_empty());
}

#[test]
fn user_flags_long_and_short() {
    let spec = Spec { flags: vec!["--db-pass".into(), "-p".into(), "-storepass".into()], ..Default::default() };
    assert_eq!(spec.labels(), ["flags"]);
    let r = with(spec);
    check(
        &r,
        &[
            ("app --db-pass=x", "app --db-pass=[REDACTED]"),
            ("app --DB_PASS x", "app --DB_PASS [REDACTED]"),
            ("app -db-pass x", "app -db-pass [REDACTED]"),
            ("mysql -phunter2 db", "mysql -p[REDACTED] db"),
            ("mysql -p hunter2", "mysql -p [REDACTED]"),
            ("mysql -p=hunter2", "mysql -p=[REDACTED]"),
            ("keytool -storepass changeit", "keytool -storepass [REDACTED]"),
        ],
    );
    // Short flags are exact: -P is mysql's port.
    unchanged(&r, &["mysql -P 3306", "app --db-passes x", "app --db-pass-file /f"]);
    assert_eq!(args(&r, &["mysql", "-p", "a b"], false), ["mysql", "-p", "[REDACTED]"]);
}

#[test]
fn user_patterns_replace_the_secret_group_or_the_whole_match() {
    let spec = Spec {
        builtins: vec![],
        flags: vec![],
        patterns: vec![
            UserPattern { name: "pin".into(), regex: r"pin:(?P<secret>\d+)".into() },
            UserPattern { name: "acme_key".into(), regex: r"acme_[a-f0-9]{8}".into() },
            UserPattern { name: "pair".into(), regex: r"(?P<secret_a>\w+)/(?P<secret_b>\w+)@vault".into() },
        ],
    };
    assert_eq!(spec.labels(), ["pin", "acme_key", "pair"]);
    let r = with(spec);
    check(
        &r,
        &[
            ("unlock pin:1234", "unlock pin:[REDACTED]"),
            ("use acme_0123abcd now", "use [REDACTED] now"),
            ("login ro/s3@vault", "login [REDACTED]/[REDACTED]@vault"),
        ],
    );
    assert_eq!(hits(&r, "pin:1 acme_0123abcd"), ["pin", "acme_key"]);
    // Across arguments: the command line is one string, joined by spaces.
    let r = with(Spec {
        patterns: vec![UserPattern { name: "opt".into(), regex: r"--opt\s+(?P<secret>\S+)".into() }],
        ..Default::default()
    });
    assert_eq!(args(&r, &["x", "--opt", "v", "y"], false), ["x", "--opt", "[REDACTED]", "y"]);
    assert_eq!(args(&r, &["x", "--opt", "v w", "y"], false), ["x", "--opt", "[REDACTED] w", "y"]);
    // A `secret_next` group that starts an argument covers all of it.
    let r = with(Spec {
        patterns: vec![UserPattern { name: "opt".into(), regex: r"--opt\s+(?P<secret_next>\S+)".into() }],
        ..Default::default()
    });
    assert_eq!(args(&r, &["x", "--opt", "v w", "y"], false), ["x", "--opt", "[REDACTED]", "y"]);
    assert_eq!(text(&r, "x --opt v w"), "x --opt [REDACTED] w", "in a text, only the group");
}

#[test]
fn spec_errors_name_the_entry() {
    let p = |name: &str, regex: &str| UserPattern { name: name.into(), regex: regex.into() };
    let e = |spec: Spec| Redactor::new(&spec).unwrap_err();
    let pats = |v: Vec<UserPattern>| Spec { patterns: v, ..Default::default() };
    let err = e(pats(vec![p("ok", "a"), p("bad", "(unclosed")]));
    assert_eq!(err.at, SpecField::PatternRegex(1));
    assert_eq!(err.message, "is not a valid regular expression: unclosed group");
    let err = e(pats(vec![p("empty", "x*")]));
    assert_eq!(err.at, SpecField::PatternRegex(0));
    assert_eq!(err.message, "matches the empty text: it would match anywhere");
    let err = e(pats(vec![p("big", r"(?:\w{100}){100}")]));
    assert_eq!(err.at, SpecField::PatternRegex(0));
    assert!(err.message.starts_with("is too large once compiled"), "{}", err.message);
    let err = e(pats(vec![p("long", &"a".repeat(MAX_PATTERN_LEN + 1))]));
    assert!(err.message.contains("at most 1024"), "{}", err.message);
    for bad in ["", "Upper", "9lives", "with-dash", &"a".repeat(64)] {
        assert_eq!(e(pats(vec![p(bad, "a")])).at, SpecField::PatternName(0), "{bad:?}");
    }
    let err = e(pats(vec![p("token_formats", "a")]));
    assert!(err.message.contains("built-in"), "{}", err.message);
    let err = e(pats(vec![p("flags", "a")]));
    assert!(err.message.contains("built-in"), "{}", err.message);
    let err = e(pats(vec![p("a", "a"), p("a", "b")]));
    assert_eq!((err.at, err.message.contains("twice")), (SpecField::PatternName(1), true));
    let err = e(pats((0..=MAX_PATTERNS).map(|i| p(&format!("p{i}"), "a")).collect()));
    assert_eq!(err.at, SpecField::Patterns);
    let flags = |v: &[&str]| Spec { flags: v.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    for bad in ["password", "-", "--", "--a b", "-é", "---x"] {
        assert_eq!(e(flags(&["--ok", bad])).at, SpecField::Flag(1), "{bad:?}");
    }
    let err = e(flags(&["--db_pass", "--DB-PASS"]));
    assert_eq!((err.at, err.message.contains("twice")), (SpecField::Flag(1), true));
    assert!(Redactor::new(&flags(&["-p", "-P"])).is_ok(), "short flags are case-sensitive");
    let many: Vec<String> = (0..=MAX_FLAGS).map(|i| format!("--f{i}")).collect();
    assert_eq!(e(Spec { flags: many, ..Default::default() }).at, SpecField::Flags);
}

#[test]
fn nothing_to_redact_touches_nothing() {
    let r = all();
    let mut s = String::from("/usr/bin/apt-get install -y curl");
    let ptr = s.as_ptr();
    assert!(r.redact_text(&mut s).is_empty());
    assert_eq!(s.as_ptr(), ptr, "the string was not rebuilt");
    let mut a: Vec<Text> = ["apt-get", "install", "-y", "curl"].iter().map(|&s| s.into()).collect();
    let ptrs: Vec<*const u8> = a.iter().map(|s| s.as_ptr()).collect();
    assert_eq!(r.redact_args(&mut a, false), None);
    assert_eq!(a.iter().map(|s| s.as_ptr()).collect::<Vec<_>>(), ptrs);
    assert_eq!(r.redact_args(&mut [], true), None);
}

#[test]
fn args_redaction_rewrites_text_that_quotes_the_command_line() {
    let r = all();
    let mut a: Vec<Text> = ["pip", "install", "--password", "hunter 2", "x"].iter().map(|&s| s.into()).collect();
    let red = r.redact_args(&mut a, false).expect("redacted");
    assert_eq!(red.before, "pip install --password hunter 2 x");
    assert_eq!(red.after, "pip install --password [REDACTED] x");
    let mut msg = format!("package manager pip ran in container abc: {}", red.before);
    red.rewrite(&mut msg);
    assert_eq!(msg, "package manager pip ran in container abc: pip install --password [REDACTED] x");
    assert_eq!(red.hits.iter().map(|i| r.labels()[i].as_str()).collect::<Vec<_>>(), ["password_flag"]);
}

#[test]
fn multibyte_text_around_secrets() {
    let r = all();
    assert_eq!(text(&r, "é --password=пароль ü token=日本 ß"), "é --password=[REDACTED] ü token=[REDACTED] ß");
    assert_eq!(args(&r, &["ü", "--password", "пароль"], false), ["ü", "--password", "[REDACTED]"]);
}

#[test]
fn the_brief_example() {
    let r = all();
    let got = args(&r, &["/tmp/busybox", "sh", "-c", "echo --password=hunter2 token=abc https://u:p@h/"], false);
    assert_eq!(got[3], "echo --password=[REDACTED] token=[REDACTED] https://u:[REDACTED]@h/");
}

#[test]
fn builtins_compile_within_the_limits() {
    for b in BUILTINS {
        assert!(!builtin_sources(b).is_empty(), "{b}");
        for (src, _) in builtin_sources(b) {
            compile(&src).unwrap_or_else(|e| panic!("{b}: {e}"));
        }
    }
    assert_eq!(all().labels(), BUILTINS);
}

/// Whether `r` remembers `text` as clean.
fn held(r: &Redactor, text: &str) -> bool {
    Clean::key(text).is_some_and(|h| r.clean.holds(text, h))
}

#[test]
fn texts_found_clean_lately_are_remembered_exactly() {
    let r = all();
    let clean = "curl https://example.com/health";
    assert_eq!(text(&r, clean), clean);
    assert!(held(&r, clean));
    assert_eq!(text(&r, clean), clean, "from the memo, the same answer");
    // Any other text is judged by the rules, however close.
    let secret = "curl https://user:pw@example.com/health";
    assert_eq!(text(&r, secret), "curl https://user:[REDACTED]@example.com/health");
    assert!(!held(&r, secret), "only clean texts are kept");
    let cmd = ["curl", "https://example.com/health"];
    assert_eq!(args(&r, &cmd, false), cmd);
    assert!(held(&r, "curl https://example.com/health"), "a command line joined is kept too");
    // Bounded: the oldest goes first; a long text is never kept.
    for i in 0..CLEAN_SLOTS {
        text(&r, &format!("ls /{i}"));
    }
    assert!(!held(&r, clean));
    assert_eq!(r.clean_entries(), CLEAN_SLOTS, "the gauge's count, read without the lock");
    let long = "x".repeat(CLEAN_MAX_LEN + 1);
    assert_eq!(text(&r, &long), long);
    assert!(!held(&r, &long));
}

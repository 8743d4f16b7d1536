//! `vlab test` from the outside: verdicts, reports, exit status, and what a bad case file
//! gets.

mod common;

use std::path::{Path, PathBuf};

use common::vlab;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn case_dir(name: &str) -> PathBuf {
    common::case_dir(&format!("basic/{name}"))
}

/// A copy of case `name` as `<dir>/suite/<name>`, with `extra` appended to its case.toml.
fn copy_case(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let to = dir.join("suite").join(name);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(case_dir(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    let toml = to.join("case.toml");
    let mut t = std::fs::read_to_string(&toml).unwrap();
    t.push_str(extra);
    std::fs::write(&toml, t).unwrap();
    to
}

#[test]
fn a_passing_case_gives_status_0_and_both_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (junit, json) = (dir.path().join("r.xml"), dir.path().join("r.json"));
    let o = vlab(&[
        "test",
        case_dir("io-ntp").to_str().unwrap(),
        "--backends",
        "vhost-user",
        "--junit",
        junit.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    for v in [
        // The reference: the path the case's own settings give, on each transport.
        "PASS basic/io-ntp::modern::packed-inorder-mrg::rust ",
        "PASS basic/io-ntp::legacy::split-mrg::rust ",
        // Every other path on the rust backend, and every path on vhost-user.
        "PASS basic/io-ntp::modern::split-nomrg::rust ",
        "PASS basic/io-ntp::modern::packed-nomrg::vhost-user ",
        "PASS basic/io-ntp::legacy::split-nomrg::vhost-user ",
    ] {
        assert!(out.contains(v), "{v:?} in {out}");
    }
    // 8 paths on modern, the 2 split ones without in-order on legacy, each on two backends.
    assert!(out.contains("vlab test: 20 verdicts in "), "{out}");
    assert!(!out.contains("::legacy::packed"), "{out}");
    assert!(out.contains("all passed"), "{out}");
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(j["passed"], true);
    assert_eq!(j["backends"]["vhost-user"]["pass"], 10);
    assert_eq!(
        j["verdicts"][0]["name"],
        "basic/io-ntp::modern::packed-inorder-mrg::rust"
    );
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains(
            r#"<testcase name="basic/io-ntp::legacy::split-nomrg::vhost-user" classname="basic/io-ntp""#
        ),
        "{x}"
    );
    assert!(!x.contains("<failure"), "{x}");
}

#[test]
fn a_failing_case_gives_status_1_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // The guest passes; the case says it must fail its checks.
    copy_case(dir.path(), "io-ntp", "\n[expect]\nexit = 1\n");
    let junit = dir.path().join("r.xml");
    let o = vlab(&[
        "test",
        dir.path().join("suite").to_str().unwrap(),
        "--backends",
        "vhost-user",
        "--filter",
        "::modern::",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "FAIL suite/io-ntp::modern::packed-inorder-mrg::rust: in-process guest exit code 0, \
             the case expects 1"
        ),
        "{out}"
    );
    // The other backend still matches the rust backend's verdict.
    assert!(
        out.contains("PASS suite/io-ntp::modern::packed-inorder-mrg::vhost-user "),
        "{out}"
    );
    assert!(out.contains("1 FAILED"), "{out}");
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains(r#"<failure message="in-process guest exit code 0, the case expects 1">"#),
        "{x}"
    );
}

#[test]
fn a_counter_the_case_expects_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    copy_case(
        dir.path(),
        "io-ntp",
        "\n[expect.counters]\ndelivered = 11\n",
    );
    let o = vlab(&[
        "test",
        dir.path().join("suite").to_str().unwrap(),
        "--backends",
        "rust",
    ]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}{}", text(&o.stderr));
    assert!(
        out.contains("in-process: counter delivered is 12, the case expects 11"),
        "{out}"
    );
}

#[test]
fn a_bad_key_names_the_file_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let case = copy_case(dir.path(), "io-ntp", "\n[guest]\nrign = 128\n");
    let o = vlab(&["test", dir.path().join("suite").to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(70), "{err}");
    assert!(
        err.contains(&format!(
            "{}: TOML parse error at line ",
            case.join("case.toml").display()
        )),
        "{err}"
    );
    assert!(err.contains("unknown field `rign`"), "{err}");
}

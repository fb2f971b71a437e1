//! No input makes pgboot panic: property tests over every parser that reads
//! what a user or a file gives it — durations, signal maps, `--expand-env`,
//! the whole command line (lock keys, URLs, every flag), redaction, the
//! migration-file statement counter. The Alembic readers have theirs in
//! `alembic/properties.rs`. Run in CI with a bounded number of cases.

use proptest::prelude::*;

use crate::config;

/// Strings that look like what users type: printable ASCII and a few
/// troublemakers (control characters, non-ASCII, `$`, quotes, `%`).
fn input() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~\\n\\t\\u{0}\\u{7f}é€$%'\"\\\\]{0,40}").expect("regex")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn durations_parse_or_refuse_and_stay_bounded(s in input()) {
        if let Ok(d) = config::parse_duration(&s) {
            prop_assert!(d <= config::MAX_DURATION);
        }
    }

    #[test]
    fn numeric_durations_never_overflow(n in any::<u64>(), unit in "(|s|ms|m|h|d|y)") {
        let s = format!("{n}{unit}");
        if let Ok(d) = config::parse_duration(&s) {
            prop_assert!(d <= config::MAX_DURATION);
        }
    }

    #[test]
    fn signal_maps_parse_or_refuse(s in input()) {
        if let Ok(m) = crate::signals::parse_map(&s) {
            for (from, to) in m {
                prop_assert!(crate::signals::forwardable(from));
                prop_assert!(to > 0);
            }
        }
    }

    #[test]
    fn env_expansion_never_panics_and_is_identity_without_dollars(s in input()) {
        let env = |k: &str| (k == "SET").then(|| "value".to_string());
        let out = config::expand(&s, &env);
        if !s.contains('$') {
            prop_assert_eq!(out, Ok(s.clone()));
        }
    }

    #[test]
    fn the_command_line_parses_or_is_a_usage_error(
        flag in "--(wait-timeout|lock-timeout|lock-key|migrate-timeout|grace-period|signal-map|db-ahead|log-format|database-url|migrate-database-url|migrate-cmd)",
        value in input(),
    ) {
        let args = ["pgboot", flag.as_str(), value.as_str(), "--database-url", "postgres://u@h/d", "--", "true"];
        match config::from_args(args, &|_| None) {
            Ok(_) => {}
            Err(e) => prop_assert_eq!(e.exit(), crate::exit::Exit::Usage),
        }
    }

    #[test]
    fn urls_are_accepted_or_refused_without_a_panic_or_their_password(
        host in input(), rest in input(),
    ) {
        let url = format!("postgres://user:Pw-s3cret-x@{host}/{rest}");
        if let Err(e) = crate::wait::Target::new(Some(&url), "DATABASE_URL") {
            prop_assert!(!crate::redact::redact(&e.to_string()).contains("Pw-s3cret-x"));
        }
    }

    #[test]
    fn redaction_masks_url_passwords_and_leaves_no_control_character(
        before in input(), pw in "[a-zA-Z0-9!*._~-]{3,20}", after in input(),
    ) {
        // A password spelled like the mask itself cannot be told from it.
        prop_assume!(pw != crate::redact::MASK);
        let text = format!("{before} postgres://u:{pw}@db/x {after}");
        let out = crate::redact::redact(&text);
        let shown = format!(":{pw}@");
        prop_assert!(!out.contains(&shown));
        let masked = format!("postgres://u:{}@db/x", crate::redact::MASK);
        prop_assert!(out.contains(&masked));
        prop_assert!(!out.chars().any(char::is_control));
    }

    #[test]
    fn statement_counting_never_panics(s in input()) {
        let _ = crate::statements::count(&s);
    }
}

#![cfg(all(feature = "config", feature = "rate-limit", feature = "http"))]
//! Layers configured from a TOML file: parsing with errors that name the
//! field, environment overrides, a config put in force through the layers'
//! handles, and reloads of a good and a bad file while requests run.

#[path = "../support/mod.rs"]
mod support;

mod reload;
mod sections;

use palisade::config::{Config, Error};

const FILE: &str = r#"
[rate_limit.api]
quotas = [{ count = 3, per = "1m" }]
tiers.pro = [{ count = 10, per = "1m", burst = 12 }]

[circuit_breaker.payment]
count_window = 20
failure_rate = 0.5
open_wait = "30s"
slow_call = "2s"
slow_call_rate = 0.8

[timeout.payment]
timeout = "1m 30s"

[bulkhead.orders]
max_in_flight = 7
queue = { max_queued = 32, max_wait = "500ms" }
"#;

fn error(text: &str) -> String {
    Config::from_toml(text).unwrap_err().to_string()
}

#[test]
fn a_file_reads_into_every_layers_section() {
    let config = Config::from_toml(FILE).unwrap();
    let api = &config.rate_limit["api"];
    assert_eq!(api.quotas[0].count.get(), 3);
    assert_eq!(api.tiers["pro"][0].burst.unwrap().get(), 12);
    let payment = &config.circuit_breaker["payment"];
    assert_eq!(payment.count_window.unwrap().get(), 20);
    assert_eq!(payment.open_wait, Some(std::time::Duration::from_secs(30)));
    assert_eq!(
        config.timeout["payment"].timeout,
        std::time::Duration::from_secs(90)
    );
    let orders = &config.bulkhead["orders"];
    assert_eq!(orders.max_in_flight.get(), 7);
    assert_eq!(orders.queue.as_ref().unwrap().max_queued, 32);
    // It turns into each layer's own settings.
    let breaker = payment
        .config("payment", "circuit_breaker.payment")
        .unwrap();
    assert!(
        format!("{breaker:?}").contains("\"payment\""),
        "{breaker:?}"
    );
}

#[test]
fn what_is_written_back_reads_the_same() {
    let config = Config::from_toml(FILE).unwrap();
    let text = toml::to_string(&config).unwrap();
    assert_eq!(Config::from_toml(&text).unwrap(), config, "{text}");
}

#[test]
fn every_error_names_the_field_and_the_reason() {
    let cases = [
        (
            "[rate_limit.api]\nquotas = [{ count = 0, per = \"1m\" }]",
            "rate_limit.api.quotas[0].count: ",
            "nonzero",
        ),
        (
            "[rate_limit.api]\nquotas = [{ count = 1, per = \"soon\" }]",
            "rate_limit.api.quotas[0].per: ",
            "not a duration",
        ),
        (
            "[rate_limit.api]\nquotas = [{ count = 1, per = \"1m\", brust = 2 }]",
            "rate_limit.api.quotas[0].brust: ",
            "unknown field `brust`",
        ),
        (
            "[rate_limit.api]\nquotas = []",
            "rate_limit.api.quotas: ",
            "at least one quota",
        ),
        (
            "[rate_limit.api]\nquotas = [{ count = 1, per = \"1m\" }]\ntiers.\"caf\u{e9}\" = [{ count = 1, per = \"1m\" }]",
            "rate_limit.api.tiers: ",
            "printable ASCII",
        ),
        (
            "[circuit_breaker.p]\nconsecutive_failures = 3\ncount_window = 10",
            "circuit_breaker.p: ",
            "exclusive",
        ),
        (
            "[circuit_breaker.p]\nfailure_rate = 1.5",
            "circuit_breaker.p.failure_rate: ",
            "(0, 1]",
        ),
        (
            "[circuit_breaker.p]\nslow_call = \"1s\"",
            "circuit_breaker.p.slow_call: ",
            "slow_call_rate",
        ),
        (
            "[timeout.p]\ntimeout = \"0s\"",
            "timeout.p.timeout: ",
            "longer than zero",
        ),
        (
            "[bulkhead.o]\nmax_in_flight = 2\nqueue = { max_queued = 0, max_wait = \"1s\" }",
            "bulkhead.o.queue: ",
            "",
        ),
        ("[load_shed.x]\nmax = 3", "", "unknown field `load_shed`"),
    ];
    for (text, field, reason) in cases {
        let err = error(text);
        assert!(err.starts_with(field), "{text:?}: {err}");
        assert!(err.contains(reason), "{text:?}: {err}");
    }
    // A syntax error says where.
    let err = Config::from_toml("[rate_limit.api\nquotas = 1").unwrap_err();
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn environment_variables_override_the_file() {
    let config = Config::from_toml_with_env(
        FILE,
        "PALISADE",
        [
            ("PALISADE__TIMEOUT__PAYMENT__TIMEOUT", "5s"),
            ("PALISADE__BULKHEAD__ORDERS__MAX_IN_FLIGHT", "9"),
            (
                "PALISADE__RATE_LIMIT__API__QUOTAS",
                "[{ count = 4, per = \"1s\" }]",
            ),
            ("UNRELATED__TIMEOUT__PAYMENT__TIMEOUT", "1s"),
        ],
    )
    .unwrap();
    assert_eq!(
        config.timeout["payment"].timeout,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(config.bulkhead["orders"].max_in_flight.get(), 9);
    assert_eq!(config.rate_limit["api"].quotas[0].count.get(), 4);
    // A bad override is refused like a bad file, naming the field.
    let err = Config::from_toml_with_env(
        FILE,
        "PALISADE",
        [("PALISADE__BULKHEAD__ORDERS__MAX_IN_FLIGHT", "0")],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("bulkhead.orders.max_in_flight: "),
        "{err}"
    );
}

mod props {
    use palisade::config::Config;
    use proptest::prelude::*;

    proptest! {
        /// Any text is read or refused with an error, never a panic.
        #[test]
        fn any_text_is_read_or_refused(text in "\\PC{0,200}") {
            let _ = Config::from_toml(&text);
        }

        /// Any value in a quota's fields is read or refused.
        #[test]
        fn any_quota_values_are_read_or_refused(count in any::<i64>(), per in "\\PC{0,12}", burst in any::<i64>()) {
            let text = format!(
                "[rate_limit.a]\nquotas = [{{ count = {count}, per = {per:?}, burst = {burst} }}]"
            );
            if let Ok(config) = Config::from_toml(&text) {
                prop_assert!(count > 0 && burst > 0);
                prop_assert_eq!(i64::from(config.rate_limit["a"].quotas[0].count.get()), count);
            }
        }
    }
}

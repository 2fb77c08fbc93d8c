//! Environment overrides: `PREFIX__A__B=value` sets `a.b` in the file's
//! table before it is read.

use super::Error;

pub(crate) fn apply<K, V>(
    table: &mut toml::Table,
    prefix: &str,
    vars: impl IntoIterator<Item = (K, V)>,
) -> Result<(), Error>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let start = format!("{prefix}__");
    // In name order, so the outcome does not depend on the environment's.
    let mut overrides: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.as_ref().starts_with(&start))
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    overrides.sort();
    for (var, value) in overrides {
        let path: Vec<String> = var[start.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(Error::Env {
                var,
                reason: "a part of its path is empty".into(),
            });
        }
        set(table, &path, parse(&value)).map_err(|reason| Error::Env {
            var: var.clone(),
            reason,
        })?;
    }
    Ok(())
}

/// A value as TOML reads it (`10`, `true`, `[1, 2]`, `{ count = 3 }`), or
/// the text as a string (`5s`).
fn parse(text: &str) -> toml::Value {
    match format!("value = {text}").parse::<toml::Table>() {
        Ok(mut table) => table.remove("value").unwrap_or_else(|| text.into()),
        Err(_) => toml::Value::String(text.to_owned()),
    }
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("a path has a part");
    let mut table = table;
    for (i, part) in parents.iter().enumerate() {
        let entry = table
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("{} is not a table", path[..=i].join(".")))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn overrides_set_values_by_path_and_type() {
        let mut t = table("[timeout.payment]\ntimeout = \"10s\"\n");
        apply(
            &mut t,
            "APP",
            [
                ("APP__TIMEOUT__PAYMENT__TIMEOUT", "5s"),
                ("APP__BULKHEAD__ORDERS__MAX_IN_FLIGHT", "7"),
                ("OTHER__TIMEOUT__X__TIMEOUT", "1s"),
                ("APP_NOT__A__PATH", "1"),
            ],
        )
        .unwrap();
        assert_eq!(t["timeout"]["payment"]["timeout"].as_str(), Some("5s"));
        assert_eq!(
            t["bulkhead"]["orders"]["max_in_flight"].as_integer(),
            Some(7)
        );
        assert!(!t.contains_key("other"));
        assert!(!t["timeout"].as_table().unwrap().contains_key("x"));
    }

    #[test]
    fn a_path_through_a_value_or_an_empty_part_is_refused() {
        let mut t = table("[timeout]\npayment = 3\n");
        let err = apply(&mut t, "APP", [("APP__TIMEOUT__PAYMENT__TIMEOUT", "5s")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable APP__TIMEOUT__PAYMENT__TIMEOUT: timeout.payment is not a table"
        );
        let err = apply(&mut t, "APP", [("APP__TIMEOUT____X", "5s")]).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}

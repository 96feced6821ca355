//! The parameters of an EC2 Query request (`Action=...&Version=...&InstanceId.1=...`), decoded
//! from the form body (or query), with the accessors the handlers need: required values,
//! numbered lists (`X.1`, `X.2`), numbered sub-structures (`X.1.Name`) and filters.

use super::error::Ec2Error;
use std::collections::BTreeMap;

/// One `Filter.N` of a Describe call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

/// Decoded request parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

fn decode(s: &str) -> String {
    String::from_utf8_lossy(&crate::auth::canonical::percent_decode(
        &s.replace('+', "%20"),
    ))
    .into_owned()
}

impl Params {
    /// Parses `application/x-www-form-urlencoded` text.
    pub fn parse(text: &str) -> Params {
        Params(
            text.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The parameter names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Every parameter as (name, value), in name order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A value that must be present and non-empty.
    pub fn req(&self, name: &str) -> Result<&str, Ec2Error> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Ec2Error::missing(name))
    }

    /// An optional integer.
    pub fn int(&self, name: &str) -> Result<Option<i64>, Ec2Error> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| Ec2Error::invalid(name, v, "It must be an integer."))
            })
            .transpose()
    }

    /// An optional boolean (`true`/`false`).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, Ec2Error> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(Ec2Error::invalid(name, v, "It must be true or false.")),
        }
    }

    /// The values of `prefix.1`, `prefix.2`, ... in index order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(prefix)?.strip_prefix('.')?.parse().ok()?;
                Some((n, v.clone()))
            })
            .collect();
        items.sort();
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// The sub-structures `prefix.N.*`, each as its own `Params` with `prefix.N.` removed.
    pub fn structs(&self, prefix: &str) -> Vec<Params> {
        let mut groups: BTreeMap<u32, Params> = BTreeMap::new();
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let Some((n, field)) = rest.split_once('.') else {
                continue;
            };
            if let Ok(n) = n.parse::<u32>() {
                groups
                    .entry(n)
                    .or_default()
                    .0
                    .insert(field.to_string(), v.clone());
            }
        }
        groups.into_values().collect()
    }

    /// `Filter.N.Name` / `Filter.N.Value.M`.
    pub fn filters(&self) -> Result<Vec<Filter>, Ec2Error> {
        self.structs("Filter")
            .into_iter()
            .map(|f| {
                Ok(Filter {
                    name: f.req("Name")?.to_string(),
                    values: f.list("Value"),
                })
            })
            .collect()
    }
}

/// True when `value` matches one of the filter's values (`*` and `?` wildcards, as EC2 does).
pub fn filter_matches(filter: &Filter, value: &str) -> bool {
    filter
        .values
        .iter()
        .any(|p| glob(p.as_bytes(), value.as_bytes()))
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_structs_and_filters_come_out_in_index_order() {
        let p = Params::parse(
            "Action=DescribeInstances&InstanceId.2=i-b&InstanceId.10=i-c&InstanceId.1=i-a\
             &Filter.1.Name=instance-state-name&Filter.1.Value.1=running&Filter.1.Value.2=pending\
             &Filter.2.Name=tag%3AName&Filter.2.Value.1=a+b",
        );
        assert_eq!(p.list("InstanceId"), vec!["i-a", "i-b", "i-c"]);
        let f = p.filters().unwrap();
        assert_eq!(f[0].values, vec!["running", "pending"]);
        assert_eq!(f[1].name, "tag:Name");
        assert_eq!(f[1].values, vec!["a b"]);
        assert_eq!(p.req("Nope").unwrap_err().code, "MissingParameter");
    }

    #[test]
    fn bad_numbers_and_booleans_are_invalid_parameter_values() {
        let p = Params::from_pairs(&[("MaxCount", "x"), ("DryRun", "yes")]);
        assert_eq!(p.int("MaxCount").unwrap_err().code, "InvalidParameterValue");
        assert_eq!(p.bool("DryRun").unwrap_err().code, "InvalidParameterValue");
    }

    #[test]
    fn filter_values_take_wildcards() {
        let f = Filter {
            name: "x".into(),
            values: vec!["web-*".into(), "d?".into()],
        };
        assert!(filter_matches(&f, "web-1"));
        assert!(filter_matches(&f, "db"));
        assert!(!filter_matches(&f, "dbx"));
    }
}

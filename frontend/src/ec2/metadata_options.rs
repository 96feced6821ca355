//! EC2's instance metadata options in the Query API: RunInstances' `MetadataOptions.*`,
//! ModifyInstanceMetadataOptions, and an instance's `metadataOptions` (botocore's
//! `InstanceMetadataOptionsRequest` and `InstanceMetadataOptionsResponse`). The instance's VMM
//! enforces `HttpTokens`, `HttpEndpoint` and `HttpPutResponseHopLimit`; `state` is `applied`
//! only once its node reported the VMM serves them (`Instance::metadata_options_applied`).
//! `HttpProtocolIpv6` and `InstanceMetadataTags` exist here only as `disabled` (the service
//! has no IPv6 endpoint and does not serve instance tags): `enabled` is refused with
//! `UnsupportedOperation`, as AWS refuses an option an instance cannot have, never taken and
//! ignored.

use super::instances::{incorrect, owned};
use super::params::Params;
use super::render::{self, ALWAYS_DISABLED};
use super::xml;
use super::{Call, Ec2, Ec2Error};
use crate::cloud::instances::{self as lifecycle, NotNow};
use crate::cloud::model::INSTANCE;
use mallee_proto::{HttpEndpoint, HttpTokens, MetadataOptions, HOP_LIMITS};

/// `base` changed by the options named `prefix` + member (`MetadataOptions.HttpTokens` in
/// RunInstances, `HttpTokens` in ModifyInstanceMetadataOptions); an absent one keeps its value.
pub fn parse(p: &Params, prefix: &str, base: MetadataOptions) -> Result<MetadataOptions, Ec2Error> {
    let name = |member: &str| format!("{prefix}{member}");
    let mut o = base;
    let tokens = name("HttpTokens");
    if let Some(v) = p.get(&tokens) {
        o.http_tokens = HttpTokens::parse(v)
            .ok_or_else(|| Ec2Error::invalid(&tokens, v, "It must be optional or required."))?;
    }
    let endpoint = name("HttpEndpoint");
    if let Some(v) = p.get(&endpoint) {
        o.http_endpoint = HttpEndpoint::parse(v)
            .ok_or_else(|| Ec2Error::invalid(&endpoint, v, "It must be enabled or disabled."))?;
    }
    let hops = name("HttpPutResponseHopLimit");
    if let Some(n) = p.int(&hops)? {
        o.http_put_response_hop_limit = (u8::try_from(n).ok())
            .filter(|n| HOP_LIMITS.contains(n))
            .ok_or_else(|| {
            let why = format!(
                "It must be an integer from {} to {}.",
                HOP_LIMITS.start(),
                HOP_LIMITS.end()
            );
            Ec2Error::invalid(&hops, &n.to_string(), &why)
        })?;
    }
    for (member, _, why) in ALWAYS_DISABLED {
        let param = name(member);
        match p.get(&param) {
            None | Some("disabled") => {}
            Some("enabled") => {
                return Err(Ec2Error::client(
                    "UnsupportedOperation",
                    format!("The {member} metadata option cannot be enabled: {why}."),
                ))
            }
            Some(v) => {
                return Err(Ec2Error::invalid(
                    &param,
                    v,
                    "It must be enabled or disabled.",
                ))
            }
        }
    }
    Ok(o)
}

/// ModifyInstanceMetadataOptions: the options given replace the instance's, the rest stay;
/// the answer's `state` is `pending` until its node reports its VMM serves them.
pub fn modify(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let id = c.p.req("InstanceId")?;
    let (inst, changed) = ec2.store.cloud(|tx| {
        let mut i = owned(tx, id, &c.user.name)?;
        let options = parse(c.p, "", i.metadata_options)?;
        let changed = match lifecycle::set_metadata_options(&mut i, options) {
            Ok(changed) => changed,
            Err(NotNow) => return Err(incorrect(&i, "modified")),
        };
        if changed {
            tx.put(INSTANCE, &i.id, &i.owner, None, &i)?;
        }
        Ok::<_, Ec2Error>((i, changed))
    })?;
    if changed {
        ec2.changes.bump();
    }
    let mut x = xml::response(c.action, c.rid);
    x.field("instanceId", &inst.id);
    render::metadata_options(&mut x, "instanceMetadataOptions", &inst);
    Ok(x.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::model::Instance;
    use crate::ec2::xml::Xml;

    fn parsed(pairs: &[(&str, &str)]) -> Result<MetadataOptions, Ec2Error> {
        parse(
            &Params::from_pairs(pairs),
            "MetadataOptions.",
            MetadataOptions::default(),
        )
    }

    #[test]
    fn absent_options_are_ec2s_defaults_and_given_ones_are_taken() {
        assert_eq!(parsed(&[]).unwrap(), MetadataOptions::default());
        let o = parsed(&[
            ("MetadataOptions.HttpTokens", "required"),
            ("MetadataOptions.HttpEndpoint", "disabled"),
            ("MetadataOptions.HttpPutResponseHopLimit", "64"),
            ("MetadataOptions.HttpProtocolIpv6", "disabled"),
            ("MetadataOptions.InstanceMetadataTags", "disabled"),
        ])
        .unwrap();
        assert_eq!(
            o,
            MetadataOptions {
                http_tokens: HttpTokens::Required,
                http_endpoint: HttpEndpoint::Disabled,
                http_put_response_hop_limit: 64,
            }
        );
    }

    #[test]
    fn a_modify_keeps_what_it_does_not_name() {
        let base = MetadataOptions {
            http_tokens: HttpTokens::Required,
            http_put_response_hop_limit: 5,
            ..MetadataOptions::default()
        };
        let p = Params::from_pairs(&[("HttpEndpoint", "disabled")]);
        let o = parse(&p, "", base).unwrap();
        assert_eq!(
            (
                o.http_tokens,
                o.http_endpoint,
                o.http_put_response_hop_limit
            ),
            (HttpTokens::Required, HttpEndpoint::Disabled, 5)
        );
    }

    #[test]
    fn bad_values_are_invalid_parameter_values_naming_the_parameter() {
        for (param, value) in [
            ("MetadataOptions.HttpTokens", "sometimes"),
            ("MetadataOptions.HttpTokens", "Required"),
            ("MetadataOptions.HttpEndpoint", "on"),
            ("MetadataOptions.HttpPutResponseHopLimit", "0"),
            ("MetadataOptions.HttpPutResponseHopLimit", "65"),
            ("MetadataOptions.HttpPutResponseHopLimit", "-1"),
            ("MetadataOptions.HttpPutResponseHopLimit", "1000"),
            ("MetadataOptions.HttpPutResponseHopLimit", "two"),
            ("MetadataOptions.HttpProtocolIpv6", "yes"),
            ("MetadataOptions.InstanceMetadataTags", ""),
        ] {
            let e = parsed(&[(param, value)]).unwrap_err();
            assert_eq!(e.code, "InvalidParameterValue", "{param}={value}: {e}");
            assert!(e.message.contains(param), "{e}");
        }
    }

    #[test]
    fn enabling_what_does_not_exist_here_is_an_unsupported_operation() {
        for member in ["HttpProtocolIpv6", "InstanceMetadataTags"] {
            let e = parsed(&[(&format!("MetadataOptions.{member}"), "enabled")]).unwrap_err();
            assert_eq!(e.code, "UnsupportedOperation", "{e}");
            assert!(e.message.contains(member), "{e}");
        }
    }

    #[test]
    fn the_element_says_pending_until_the_node_reports_the_options_served() {
        let mut i = crate::cloud::reconcile::tests::instance();
        i.metadata_options.http_put_response_hop_limit = 2;
        let xml = |i: &Instance| {
            let mut x = Xml::namespaced(xml::EC2_NS);
            x.open("r");
            render::metadata_options(&mut x, "metadataOptions", i);
            x.finish()
        };
        let pending = xml(&i);
        assert!(
            pending.contains(
                "<metadataOptions><state>pending</state><httpTokens>optional</httpTokens>\
                 <httpPutResponseHopLimit>2</httpPutResponseHopLimit>\
                 <httpEndpoint>enabled</httpEndpoint><httpProtocolIpv6>disabled</httpProtocolIpv6>\
                 <instanceMetadataTags>disabled</instanceMetadataTags></metadataOptions>"
            ),
            "{pending}"
        );
        i.metadata_options_served = Some(i.metadata_options);
        assert!(xml(&i).contains("<state>applied</state>"));
    }
}

//! DescribeAppliance and UpgradeAppliance, for administrators only: the flashable appliance's
//! A/B slots (which runs, what each holds, how the last upgrade went), and an upgrade from an
//! image uploaded to Walrus (`ImageLocation=bucket/key`, optional `Tries`). Mallee actions: no
//! AWS client models them, so callers sign Query requests themselves (`scripts/mallee-upgrade`).
//! The checks and the staging are [`crate::appliance`]; the daemon then exits for `mallee-init`
//! to install the image and reboot.

use super::nodes::authorize;
use super::xml::{self, time};
use super::{images::walrus_object, Call, Ec2, Ec2Error};
use crate::appliance::{UpgradeError, DEFAULT_TRIES};
use mallee_proto::appliance::ApplianceStatus;

fn refused(e: UpgradeError, location: &str) -> Ec2Error {
    match e {
        UpgradeError::NotAppliance => Ec2Error::client("UnsupportedOperation", e.to_string()),
        UpgradeError::NoStatus(_) | UpgradeError::Busy => {
            Ec2Error::client("IncorrectState", e.to_string())
        }
        UpgradeError::Tries(n) => Ec2Error::invalid("Tries", &n.to_string(), &e.to_string()),
        UpgradeError::BadImage(_)
        | UpgradeError::NoSlotImage(_)
        | UpgradeError::NotNewer { .. } => {
            Ec2Error::invalid("ImageLocation", location, &e.to_string())
        }
        UpgradeError::Io { .. } => Ec2Error::new(500, "InternalError", e.to_string()),
    }
}

/// The response document of DescribeAppliance.
pub fn render(action: &str, rid: &str, s: &ApplianceStatus) -> String {
    let mut x = xml::response(action, rid);
    x.field("slot", s.slot)
        .field("version", &s.version)
        .field("buildId", &s.build);
    x.set("slotSet", &s.slots, |x, slot| {
        x.field("slot", slot.slot)
            .field("version", &slot.version)
            .field("state", &slot.state);
    });
    if let Some(u) = &s.last_upgrade {
        x.open("lastUpgrade")
            .field("slot", u.slot)
            .field("version", &u.version)
            .field("tries", u.tries)
            .field("result", &u.result)
            .field("detail", &u.detail)
            .field("time", time(u.at_ms as i64))
            .close("lastUpgrade");
    }
    x.finish()
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    authorize(c.user, c.action)?;
    let appliance = ec2
        .appliance
        .as_ref()
        .ok_or_else(|| refused(UpgradeError::NotAppliance, ""))?;
    let status = appliance.status().map_err(|e| refused(e, ""))?;
    Ok(render(c.action, c.rid, &status))
}

pub fn upgrade(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    authorize(c.user, c.action)?;
    let location = c.p.req("ImageLocation")?;
    let appliance = ec2
        .appliance
        .as_ref()
        .ok_or_else(|| refused(UpgradeError::NotAppliance, location))?;
    let tries = match c.p.int("Tries")? {
        None => DEFAULT_TRIES,
        Some(n) => u32::try_from(n)
            .map_err(|_| Ec2Error::invalid("Tries", &n.to_string(), "Use 1 to 9."))?,
    };
    let (_, _, obj) = walrus_object(ec2, c.user, location)?;
    let image = ec2.store.blob_file(&obj.blob).map_err(Ec2Error::internal)?;
    let staged = appliance
        .stage(&image, tries)
        .map_err(|e| refused(e, location))?;
    tracing::info!(user = %c.user.name, version = %staged.version, slot = %staged.slot, "appliance upgrade staged; restarting for init to install it");
    appliance.request_restart();
    let mut x = xml::response(c.action, c.rid);
    x.field("slot", staged.slot)
        .field("version", &staged.version)
        .field("tries", staged.tries)
        .field("return", true);
    Ok(x.finish())
}

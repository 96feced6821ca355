//! What happens to instances beyond their own record: the instances placed on a node, and
//! what a terminated instance lets go of. The node-driven state machine is `reconcile`; the
//! API's lifecycle calls change an instance's goal in `ec2/instances.rs`.

use super::model::{Address, Instance, Volume, ADDRESS, INSTANCE, VOLUME};
use crate::store::{CloudTx, StoreError};

/// Every instance placed on `node`, terminated ones included.
pub fn instances_on(tx: &CloudTx<'_>, node: &str) -> Result<Vec<Instance>, StoreError> {
    Ok(tx
        .list::<Instance>(INSTANCE, None)?
        .into_iter()
        .filter(|i| i.node == node)
        .collect())
}

/// What a terminated instance lets go of: its elastic IP is disassociated and its volumes
/// detached (as EC2 does). The caller stores `i`.
pub fn release_on_termination(tx: &CloudTx<'_>, i: &mut Instance) -> Result<(), StoreError> {
    if let Some(ip) = i.public_ip.take() {
        if let Some(mut a) = tx.get::<Address>(ADDRESS, &ip)? {
            a.instance_id = None;
            a.association_id = None;
            tx.put(ADDRESS, &a.public_ip, &a.owner, None, &a)?;
        }
        i.metadata.public_ipv4 = None;
    }
    for mut v in tx.list::<Volume>(VOLUME, Some(&i.owner))? {
        if v.attachment.as_ref().is_some_and(|a| a.instance_id == i.id) {
            v.attachment = None;
            v.state = "available".into();
            tx.put(VOLUME, &v.id, &v.owner, None, &v)?;
        }
    }
    Ok(())
}

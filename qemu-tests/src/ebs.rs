//! EBS calls for the end-to-end scenarios: volumes and snapshots through the AWS CLI, each
//! waiting for the state the API reports only once it is true (a volume's backing file made,
//! an attachment held by the node's VMM, a snapshot's chunks in Walrus).

use crate::cloud::{json, Frontend};
use std::time::{Duration, Instant};

/// How long a volume or snapshot may take to reach the state waited for.
pub const EBS_WAIT: Duration = Duration::from_secs(180);

impl Frontend {
    /// The availability zone instance `id` runs in.
    pub fn zone(&self, id: &str) -> anyhow::Result<String> {
        let v = json(&self.aws(&["ec2", "describe-instances", "--instance-ids", id])?)?;
        v["Reservations"][0]["Instances"][0]["Placement"]["AvailabilityZone"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no zone for {id}: {v}"))
    }

    /// DescribeVolumes of one volume.
    pub fn volume(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let v = json(&self.aws(&["ec2", "describe-volumes", "--volume-ids", id])?)?;
        Ok(v["Volumes"][0].clone())
    }

    /// CreateVolume of `gib` GiB in `zone` (from `snapshot` if given); waits until available.
    pub fn create_volume(
        &self,
        gib: u32,
        zone: &str,
        snapshot: Option<&str>,
    ) -> anyhow::Result<String> {
        let size = gib.to_string();
        let mut args = vec!["ec2", "create-volume", "--size", &size];
        args.extend_from_slice(&["--availability-zone", zone]);
        if let Some(s) = snapshot {
            args.extend_from_slice(&["--snapshot-id", s]);
        }
        let v = json(&self.aws(&args)?)?;
        let id = v["VolumeId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no VolumeId: {v}"))?
            .to_string();
        self.wait_volume(&id, "available", |v| v["State"] == "available")?;
        Ok(id)
    }

    /// Polls DescribeVolumes until `done` holds for the volume.
    pub fn wait_volume(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + EBS_WAIT;
        loop {
            let v = self.volume(id)?;
            if done(&v) {
                return Ok(v);
            }
            anyhow::ensure!(Instant::now() < deadline, "{id} never {what}: {v}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// AttachVolume, then waits until the attachment is `attached` (the node's VMM has it).
    pub fn attach_volume(&self, volume: &str, instance: &str, device: &str) -> anyhow::Result<()> {
        let a = json(&self.aws(&[
            "ec2",
            "attach-volume",
            "--volume-id",
            volume,
            "--instance-id",
            instance,
            "--device",
            device,
        ])?)?;
        anyhow::ensure!(a["State"] == "attaching", "AttachVolume answered {a}");
        self.wait_volume(volume, "attached", |v| {
            v["Attachments"][0]["State"] == "attached"
        })
        .map(drop)
    }

    /// DetachVolume, then waits until the volume is `available` (its node let it go).
    pub fn detach_volume(&self, volume: &str) -> anyhow::Result<()> {
        let a = json(&self.aws(&["ec2", "detach-volume", "--volume-id", volume])?)?;
        anyhow::ensure!(a["State"] == "detaching", "DetachVolume answered {a}");
        self.wait_volume(volume, "available", |v| v["State"] == "available")
            .map(drop)
    }

    /// CreateSnapshot of `volume`; waits until it is completed and returns its id.
    pub fn snapshot(&self, volume: &str) -> anyhow::Result<String> {
        let s = json(&self.aws(&["ec2", "create-snapshot", "--volume-id", volume])?)?;
        anyhow::ensure!(s["State"] == "pending", "CreateSnapshot answered {s}");
        let id = s["SnapshotId"].as_str().unwrap_or_default().to_string();
        let deadline = Instant::now() + EBS_WAIT;
        loop {
            let v = json(&self.aws(&["ec2", "describe-snapshots", "--snapshot-ids", &id])?)?;
            let snap = &v["Snapshots"][0];
            if snap["State"] == "completed" {
                anyhow::ensure!(snap["Progress"] == "100%", "completed at {snap}");
                return Ok(id);
            }
            anyhow::ensure!(
                snap["State"] == "pending" && Instant::now() < deadline,
                "snapshot {id}: {snap}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The bytes of every object in the snapshot bucket (chunks and manifests).
    pub fn snapshot_store_bytes(&self) -> anyhow::Result<u64> {
        let v = json(&self.aws(&["s3api", "list-objects-v2", "--bucket", "mallee-snapshots"])?)?;
        Ok((v["Contents"].as_array().into_iter().flatten())
            .filter_map(|o| o["Size"].as_u64())
            .sum())
    }
}

"""Who am I: STS GetCallerIdentity and IAM GetUser with boto3 and the AWS CLI against the
frontend's one endpoint (requests signed for `sts` and `iam`), every answer and error checked
against botocore's models (query_model); then the EC2 owner ids the same callers see, which must
be the Account STS gives. Prints `account NAME ID` for the harness to compare with
`admin user list`. Usage: ec2_identity.py ENDPOINT (USER2_KEY/USER2_SECRET in the environment)."""

import datetime
import os
import re

from ec2_client import (CHECK, QUERY_CHECKS, admin_keys, cli, client, expect, instances,
                        step, wait_state, wait_snapshot, wait_volume)

key, secret = admin_keys()
bob_key, bob_secret = os.environ["USER2_KEY"], os.environ["USER2_SECRET"]
sts, iam, ec2, s3 = client("sts"), client("iam"), client(), client("s3")
bob_sts = client("sts", key=bob_key, secret=bob_secret)
bob_iam = client("iam", key=bob_key, secret=bob_secret)
bob_ec2 = client(key=bob_key, secret=bob_secret)

# --- STS GetCallerIdentity ---------------------------------------------------------------------
me = sts.get_caller_identity()
account = me["Account"]
assert re.fullmatch(r"\d{12}", account), me
assert me["Arn"] == f"arn:aws:iam::{account}:user/admin", me
assert re.fullmatch(r"AIDA[A-Z2-7]{17}", me["UserId"]), me
assert cli("sts", "get-caller-identity") == {"UserId": me["UserId"], "Account": account, "Arn": me["Arn"]}
bob = bob_sts.get_caller_identity()
assert re.fullmatch(r"\d{12}", bob["Account"]) and bob["Account"] != account, (me, bob)
assert bob["Arn"] == f"arn:aws:iam::{bob['Account']}:user/bob" and bob["UserId"] != me["UserId"], bob
print(f"account admin {account}", flush=True)
print(f"account bob {bob['Account']}", flush=True)
step("sts get-caller-identity (boto3, AWS CLI)")

# --- IAM GetUser ---------------------------------------------------------------------------------
user = iam.get_user()["User"]
assert (user["UserName"], user["UserId"], user["Arn"], user["Path"]) == ("admin", me["UserId"], me["Arn"], "/"), user
age = datetime.datetime.now(datetime.timezone.utc) - user["CreateDate"]
assert datetime.timedelta(0) <= age < datetime.timedelta(hours=1), user
got = cli("iam", "get-user")["User"]
assert (got["UserName"], got["Arn"], got["UserId"]) == ("admin", me["Arn"], me["UserId"]), got
assert iam.get_user(UserName="bob")["User"]["Arn"] == bob["Arn"], "the admin may look at bob"
assert bob_iam.get_user(UserName="bob")["User"]["UserId"] == bob["UserId"]
msg = expect("AccessDenied", bob_iam.get_user, UserName="admin")
assert bob["Arn"] in msg, msg
expect("NoSuchEntity", iam.get_user, UserName="nobody")
cli("iam", "get-user", "--user-name", "nobody", expect_error="NoSuchEntity")
step("iam get-user (boto3, AWS CLI): self, the admin looking at bob, bob refused")

# --- errors in the services' own formats -----------------------------------------------------------
expect("InvalidAction", iam.list_users)
expect("InvalidAction", client("sts", retry=False).get_session_token)
for service in ("sts", "iam"):
    wrong = client(service, key=key, secret="wrong-secret", retry=False)
    call = wrong.get_caller_identity if service == "sts" else wrong.get_user
    expect("SignatureDoesNotMatch", call)
    stranger = client(service, key="MKIA0000000000000000", secret="x", retry=False)
    call = stranger.get_caller_identity if service == "sts" else stranger.get_user
    expect("InvalidClientTokenId", call)
step("InvalidAction, SignatureDoesNotMatch, InvalidClientTokenId")

# --- EC2 owner ids are the STS account --------------------------------------------------------------
web = ec2.create_security_group(GroupName="who-web", Description="w")["GroupId"]
ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[
    {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": web}]}])
g = ec2.describe_security_groups(GroupIds=[web])["SecurityGroups"][0]
assert g["OwnerId"] == account, g
assert g["IpPermissions"][0]["UserIdGroupPairs"][0]["UserId"] == account, g
owned = ec2.describe_security_groups(Filters=[{"Name": "owner-id", "Values": [account]}])["SecurityGroups"]
assert web in {x["GroupId"] for x in owned}, owned
assert all(x["OwnerId"] == bob["Account"] for x in bob_ec2.describe_security_groups()["SecurityGroups"])

s3.create_bucket(Bucket="who-images")
s3.put_object(Bucket="who-images", Key="root.img", Body=os.urandom(4096))
emi = ec2.register_image(Name="who", ImageLocation="who-images/root.img")["ImageId"]
assert ec2.describe_images(ImageIds=[emi])["Images"][0]["OwnerId"] == account
assert [i["ImageId"] for i in ec2.describe_images(Owners=[account])["Images"]] == [emi]
assert ec2.describe_images(Owners=[bob["Account"]])["Images"] == []
assert [i["ImageId"] for i in ec2.describe_images(Filters=[{"Name": "owner-id", "Values": [account]}])["Images"]] == [emi]
expect("InvalidAMIAttributeItemValue", ec2.modify_image_attribute, ImageId=emi,
       LaunchPermission={"Add": [{"UserId": "bob"}]})
expect("InvalidAMIAttributeItemValue", ec2.modify_image_attribute, ImageId=emi,
       LaunchPermission={"Add": [{"UserId": "000000000000"}]})
assert bob_ec2.describe_images(Owners=[account])["Images"] == []
cli("ec2", "modify-image-attribute", "--image-id", emi, "--launch-permission",
    f"Add=[{{UserId={bob['Account']}}}]")
perms = ec2.describe_image_attribute(ImageId=emi, Attribute="launchPermission")["LaunchPermissions"]
assert perms == [{"UserId": bob["Account"]}], perms
shared = bob_ec2.describe_images(Owners=[account])["Images"]
assert [(i["ImageId"], i["OwnerId"]) for i in shared] == [(emi, account)], shared
assert [i["ImageId"] for i in ec2.describe_images(ExecutableUsers=[bob["Account"]])["Images"]] == [emi]
step("security groups and images: OwnerId, owner-id, Owners and launch permissions by account")

run = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1)
assert run["OwnerId"] == account, run
iid = run["Instances"][0]["InstanceId"]
wait_state(ec2, [iid], "running")
assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["OwnerId"] == account
zone = instances(ec2, InstanceIds=[iid])[0]["Placement"]["AvailabilityZone"]
vol = ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
wait_volume(ec2, vol)
snap = ec2.create_snapshot(VolumeId=vol)
assert snap["OwnerId"] == account, snap
assert ec2.describe_snapshots(SnapshotIds=[snap["SnapshotId"]])["Snapshots"][0]["OwnerId"] == account
wait_snapshot(ec2, snap["SnapshotId"])
ec2.delete_snapshot(SnapshotId=snap["SnapshotId"])
ec2.delete_volume(VolumeId=vol)
ec2.terminate_instances(InstanceIds=[iid])
wait_state(ec2, [iid], "terminated")
step("instances and snapshots: OwnerId is the account")

print(CHECK.summary(), flush=True)
for service, checker in QUERY_CHECKS.items():
    print(f"{service} {checker.summary()}", flush=True)

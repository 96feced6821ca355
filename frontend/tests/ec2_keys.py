"""Key pairs as EC2 makes and fingerprints them, checked with openssl and ssh-keygen: a
default `create-key-pair` gives an RSA private key in PKCS#1 PEM whose fingerprint is the SHA-1
of its DER PKCS#8 form; `KeyType=ed25519` gives an OpenSSH private key whose fingerprint is
ssh-keygen's SHA-256 (with base64 padding); imported RSA keys get the MD5 of their DER public
key, whatever format they came in. Then one instance per key type: the harness checks the
public key its node is handed for the metadata (`public-keys/0/openssh-key`).
Usage: ec2_keys.py ENDPOINT."""

import os
import subprocess
import tempfile

from ec2_client import CHECK, cli, client, expect, step, wait_state

ec2 = client()
s3 = client("s3")
work = tempfile.mkdtemp()


def run(*args, stdin=None):
    return subprocess.run(args, input=stdin, check=True, capture_output=True).stdout


def private_file(name, text):
    path = os.path.join(work, name)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(text)
    return path


def public_line(private_path):
    """`ssh-keygen -y`: the private key parses, and this is its public half (no comment)."""
    return " ".join(run("ssh-keygen", "-y", "-f", private_path).decode().split()[:2])


def openssl_fingerprint(pipeline_in, *first, digest):
    """`openssl FIRST | openssl DIGEST -c`: the colon-separated digest openssl prints."""
    der = run("openssl", *first, stdin=pipeline_in)
    out = run("openssl", digest, "-c", stdin=der).decode()
    return out.strip().split("= ")[-1]


def ssh_sha256(path):
    """The digest `ssh-keygen -l` prints (`SHA256:…` without padding), padded as EC2 shows it."""
    digest = run("ssh-keygen", "-l", "-f", path).decode().split()[1]
    assert digest.startswith("SHA256:"), digest
    return digest[len("SHA256:"):] + "="


described = lambda name: ec2.describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"][0]  # noqa: E731

# --- CreateKeyPair: RSA by default ----------------------------------------------------------------
made = cli("ec2", "create-key-pair", "--key-name", "k-rsa")
pem = made["KeyMaterial"]
assert pem.startswith("-----BEGIN RSA PRIVATE KEY-----\n"), pem[:40]
rsa_path = private_file("k-rsa.pem", pem)
rsa_public = public_line(rsa_path)
assert rsa_public.startswith("ssh-rsa "), rsa_public
bits = run("openssl", "rsa", "-in", rsa_path, "-noout", "-text").decode().splitlines()[0]
assert "2048 bit" in bits, bits
# The AWS user guide's check for a key EC2 made.
want = openssl_fingerprint(pem.encode(), "pkcs8", "-nocrypt", "-topk8", "-outform", "DER", digest="sha1")
assert made["KeyFingerprint"] == want, (made["KeyFingerprint"], want)
d = described("k-rsa")
assert (d["KeyType"], d["KeyFingerprint"], d["PublicKey"]) == ("rsa", want, rsa_public), d
step("default create-key-pair: RSA, PKCS#1 PEM, SHA-1 of PKCS#8")

# --- CreateKeyPair: ed25519 -------------------------------------------------------------------------
made = ec2.create_key_pair(KeyName="k-ed", KeyType="ed25519", KeyFormat="pem")
assert made["KeyMaterial"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n"), made["KeyMaterial"][:40]
ed_path = private_file("k-ed", made["KeyMaterial"])
ed_public = public_line(ed_path)
assert ed_public.startswith("ssh-ed25519 "), ed_public
assert made["KeyFingerprint"] == ssh_sha256(ed_path), (made["KeyFingerprint"], ssh_sha256(ed_path))
d = described("k-ed")
assert (d["KeyType"], d["KeyFingerprint"], d["PublicKey"]) == ("ed25519", made["KeyFingerprint"], ed_public), d
step("create-key-pair ed25519: OpenSSH private key, SHA-256 fingerprint")

expect("UnsupportedOperation", ec2.create_key_pair, KeyName="k-ppk", KeyFormat="ppk")
expect("InvalidParameterValue", ec2.create_key_pair, KeyName="k-dsa", KeyType="dsa")
expect("InvalidKeyPair.Duplicate", ec2.create_key_pair, KeyName="k-rsa", KeyType="ed25519")
assert {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]} == {"k-rsa", "k-ed"}
step("ppk, unknown key types and duplicates refused; nothing stored for them")

# --- ImportKeyPair ----------------------------------------------------------------------------------
theirs = os.path.join(work, "theirs")
run("ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-m", "PEM", "-N", "", "-C", "me@host", "-f", theirs)
with open(theirs, "rb") as f:
    want = openssl_fingerprint(f.read(), "rsa", "-pubout", "-outform", "DER", digest="md5")
rfc4716 = run("ssh-keygen", "-e", "-f", theirs + ".pub")
imported = {}
for name, material in [("imp-openssh", open(theirs + ".pub", "rb").read()), ("imp-rfc4716", rfc4716)]:
    path = os.path.join(work, name)
    with open(path, "wb") as f:
        f.write(material)
    imported[name] = cli("ec2", "import-key-pair", "--key-name", name, "--public-key-material", f"fileb://{path}")
    assert imported[name]["KeyFingerprint"] == want, (name, imported[name], want)
    assert described(name)["KeyType"] == "rsa"
    assert described(name)["PublicKey"] == public_line(theirs)
step("import-key-pair RSA (OpenSSH and RFC 4716): MD5 of the DER public key")

mine = os.path.join(work, "mine")
run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", mine)
got = ec2.import_key_pair(KeyName="imp-ed", PublicKeyMaterial=open(mine + ".pub", "rb").read())
assert got["KeyFingerprint"] == ssh_sha256(mine), (got, ssh_sha256(mine))
assert described("imp-ed")["KeyType"] == "ed25519"
ecdsa = os.path.join(work, "ecdsa")
run("ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", ecdsa)
msg = expect("InvalidKey.Format", ec2.import_key_pair, KeyName="imp-ec", PublicKeyMaterial=open(ecdsa + ".pub", "rb").read())
assert "ecdsa" in msg, msg
expect("InvalidKey.Format", ec2.import_key_pair, KeyName="bad", PublicKeyMaterial=b"ssh-rsa notbase64")
only_rsa = ec2.describe_key_pairs(Filters=[{"Name": "key-type", "Values": ["rsa"]}])["KeyPairs"]
assert sorted(k["KeyName"] for k in only_rsa) == ["imp-openssh", "imp-rfc4716", "k-rsa"], only_rsa
step("import-key-pair ed25519; ECDSA and junk refused; key-type filter")

# --- the public half reaches each instance's metadata ---------------------------------------------------
s3.create_bucket(Bucket="keys-images")
s3.put_object(Bucket="keys-images", Key="root.img", Body=os.urandom(4096))
emi = ec2.register_image(Name="keys", ImageLocation="keys-images/root.img")["ImageId"]
launched = {}
for name in ["k-rsa", "k-ed"]:
    iid = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1, KeyName=name)["Instances"][0]["InstanceId"]
    launched[name] = iid
wait_state(ec2, list(launched.values()), "running")
for name, public in [("k-rsa", rsa_public), ("k-ed", ed_public)]:
    # What EC2's metadata serves at public-keys/0/openssh-key: the public key and its name.
    print(f"metadata-key {launched[name]} {public} {name}", flush=True)
ec2.terminate_instances(InstanceIds=list(launched.values()))
wait_state(ec2, list(launched.values()), "terminated")
for name in ["k-rsa", "k-ed", "imp-openssh", "imp-rfc4716", "imp-ed"]:
    ec2.delete_key_pair(KeyName=name)
assert ec2.describe_key_pairs()["KeyPairs"] == []
step("instances launched with each key type; keys deleted")
print(CHECK.summary(), flush=True)

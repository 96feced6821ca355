"""Checks EC2 responses against botocore's ec2 service model, element by element.

botocore's parser silently drops elements it does not know, so parsing a response proves
little. `ModelChecker` is registered on botocore's `before-parse.ec2` event (for boto3
clients and for the AWS CLI's own session) and walks the raw XML against the operation's
output shape: every element must be a modeled member (by its serialized name), lists must
hold `item` elements, scalars must have the modeled type (integer, boolean, timestamp, enum
value, base64 blob), and every element must be in the EC2 namespace. Error responses must be
the EC2 error document. Any mismatch raises AssertionError at once.
"""

import base64
import collections
import re
import xml.etree.ElementTree as ET

import botocore.loaders
import botocore.model

NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"
ISO8601 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class ModelChecker:
    def __init__(self):
        raw = botocore.loaders.Loader().load_service_model("ec2", "service-2")
        self.model = botocore.model.ServiceModel(raw, service_name="ec2")
        self.responses = collections.Counter()
        self.elements = 0

    def register(self, events):
        events.register("before-parse.ec2", self)

    def __call__(self, operation_model, response_dict, **_):
        body = response_dict["body"]
        status = response_dict["status_code"]
        op = operation_model.name
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            raise AssertionError(f"{op}: response is not XML ({e}): {body[:300]!r}")
        if status >= 300:
            self.check_error(op, root, body)
        else:
            self.check_ok(op, operation_model.output_shape, root)
        self.responses[(op, status < 300)] += 1

    def check_error(self, op, root, body):
        tags = [root.tag] + [c.tag for c in root]
        assert tags == ["Response", "Errors", "RequestID"], f"{op}: error document {tags}: {body[:300]!r}"
        errors = root.find("Errors")
        assert len(errors) >= 1, f"{op}: no Error element"
        for err in errors:
            assert err.tag == "Error", f"{op}: {err.tag} in Errors"
            kids = [c.tag for c in err]
            assert kids == ["Code", "Message"], f"{op}: Error children {kids}"
            assert err.find("Code").text, f"{op}: empty Code"
        assert root.find("RequestID").text, f"{op}: empty RequestID"

    def check_ok(self, op, shape, root):
        assert root.tag == f"{NS}{op}Response", f"{op}: root element {root.tag}"
        kids = list(root)
        assert kids and kids[0].tag == f"{NS}requestId" and kids[0].text, f"{op}: requestId must come first"
        self.walk_structure(op, shape, kids[1:], f"{op}Response", allow_return=shape is None)

    def tag(self, elem, path):
        assert elem.tag.startswith(NS), f"{path}: element {elem.tag} is not in the EC2 namespace"
        return elem.tag[len(NS):]

    def walk_structure(self, op, shape, children, path, allow_return=False):
        members = {}
        if shape is not None:
            for name, m in shape.members.items():
                members[m.serialization.get("name", name)] = m
        seen = set()
        for child in children:
            tag = self.tag(child, path)
            here = f"{path}/{tag}"
            if tag == "return" and allow_return and tag not in members:
                assert child.text in ("true", "false"), f"{here}: {child.text!r} is not a boolean"
                continue
            assert tag in members, (
                f"{here}: element <{tag}> is not in botocore's model of {shape.name if shape else 'an empty result'}"
                f" (members: {sorted(members)})"
            )
            assert tag not in seen, f"{here}: repeated element"
            seen.add(tag)
            self.walk(op, members[tag], child, here)

    def walk(self, op, shape, elem, path):
        self.elements += 1
        t = shape.type_name
        if t == "structure":
            assert not (elem.text or "").strip(), f"{path}: text inside a structure"
            self.walk_structure(op, shape, list(elem), path)
        elif t == "list":
            item_name = shape.member.serialization.get("name", "member")
            for child in elem:
                tag = self.tag(child, path)
                assert tag == item_name, f"{path}: list element <{tag}>, model says <{item_name}>"
                self.walk(op, shape.member, child, f"{path}/{tag}")
        else:
            assert len(elem) == 0, f"{path}: scalar {t} has child elements"
            self.scalar(shape, elem.text or "", path)

    def scalar(self, shape, text, path):
        t = shape.type_name
        if t in ("integer", "long"):
            assert re.fullmatch(r"-?\d+", text), f"{path}: {text!r} is not an {t}"
        elif t in ("float", "double"):
            float(text)
        elif t == "boolean":
            assert text in ("true", "false"), f"{path}: {text!r} is not a boolean"
        elif t == "timestamp":
            assert ISO8601.match(text), f"{path}: {text!r} is not an ISO 8601 timestamp"
        elif t == "blob":
            base64.b64decode(text, validate=True)
        elif t == "string":
            enum = shape.enum
            if enum:
                assert text in enum, f"{path}: {text!r} is not one of {shape.name} {list(enum)[:12]}"
        else:
            raise AssertionError(f"{path}: unexpected shape type {t}")

    def summary(self):
        ops = sorted({op for op, _ in self.responses})
        total = sum(self.responses.values())
        return f"model-checked {total} responses ({len(ops)} operations, {self.elements} elements): {', '.join(ops)}"

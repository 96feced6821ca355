"""Checks STS and IAM responses (the AWS query protocol) against botocore's service models,
element by element, as `ec2_model` does for EC2.

A query-protocol answer is `<OpResponse xmlns=NS><OpResult>…</OpResult><ResponseMetadata>
<RequestId/></ResponseMetadata></OpResponse>`, lists hold `<member>` items, and an error is
`<ErrorResponse xmlns=NS><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`.
Beyond `ec2_model`'s checks, every member the model marks required must be present and strings
must meet the model's length limits and pattern. Any mismatch raises AssertionError at once.
"""

import collections
import re

import botocore.loaders
import botocore.model

from ec2_model import ModelChecker


class QueryModelChecker(ModelChecker):
    def __init__(self, service):
        raw = botocore.loaders.Loader().load_service_model(service, "service-2")
        self.model = botocore.model.ServiceModel(raw, service_name=service)
        assert self.model.protocol == "query", self.model.protocol
        self.ns = "{" + self.model.metadata["xmlNamespace"] + "}"
        self.service = service
        self.responses = collections.Counter()
        self.elements = 0

    def register(self, events):
        events.register(f"before-parse.{self.service}", self)

    def tag(self, elem, path):
        assert elem.tag.startswith(self.ns), f"{path}: element {elem.tag} is not in {self.ns}"
        return elem.tag[len(self.ns):]

    def check_error(self, op, root, body):
        assert root.tag == f"{self.ns}ErrorResponse", f"{op}: error root {root.tag}: {body[:300]!r}"
        kids = [self.tag(c, op) for c in root]
        assert kids == ["Error", "RequestId"], f"{op}: ErrorResponse children {kids}"
        err = root.find(f"{self.ns}Error")
        fields = [self.tag(c, op) for c in err]
        assert fields == ["Type", "Code", "Message"], f"{op}: Error children {fields}"
        assert err.find(f"{self.ns}Type").text in ("Sender", "Receiver"), f"{op}: bad Type"
        assert err.find(f"{self.ns}Code").text, f"{op}: empty Code"
        assert root.find(f"{self.ns}RequestId").text, f"{op}: empty RequestId"

    def check_ok(self, op, shape, root):
        assert root.tag == f"{self.ns}{op}Response", f"{op}: root element {root.tag}"
        kids = list(root)
        tags = [self.tag(c, op) for c in kids]
        assert tags == [f"{op}Result", "ResponseMetadata"], f"{op}: response children {tags}"
        meta = [self.tag(c, op) for c in kids[1]]
        assert meta == ["RequestId"] and kids[1][0].text, f"{op}: ResponseMetadata {meta}"
        self.walk_structure(op, shape, list(kids[0]), f"{op}Result")

    def walk_structure(self, op, shape, children, path, allow_return=False):
        super().walk_structure(op, shape, children, path, allow_return)
        if shape is not None:
            present = {self.tag(c, path) for c in children}
            for name in shape.required_members:
                wire = shape.members[name].serialization.get("name", name)
                assert wire in present, f"{path}: required <{wire}> is missing"

    def scalar(self, shape, text, path):
        super().scalar(shape, text, path)
        if shape.type_name == "string":
            meta = shape.metadata
            assert len(text) >= meta.get("min", 0), f"{path}: {text!r} shorter than {meta['min']}"
            assert len(text) <= meta.get("max", len(text)), f"{path}: {text!r} longer than {meta['max']}"
            if "pattern" in meta:
                assert re.fullmatch(meta["pattern"], text), f"{path}: {text!r} does not match {meta['pattern']}"

import assert from "node:assert/strict";
import { test } from "node:test";

import { passLabel, validatePass } from "../site/passes.js";

test("a complete form is valid and trimmed", () => {
  const check = validatePass({ email: " ada@example.org ", event: "launch" });
  assert.equal(check.ok, true);
  assert.deepEqual(check.value, { email: "ada@example.org", event: "launch" });
});

test("a bad email and a missing event are both reported", () => {
  const check = validatePass({ email: "ada", event: " " });
  assert.equal(check.ok, false);
  assert.match(check.errors.email, /email address/);
  assert.match(check.errors.event, /Name the event/);
});

test("a pass reads as email and event", () => {
  assert.equal(passLabel({ email: "ada@example.org", event: "launch" }), "ada@example.org — launch");
});

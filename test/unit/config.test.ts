/** Configuration is validated at start-up with messages that name the key and what to do. */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, test } from "node:test";
import { agentConfigSchema } from "@gatehouse/agent/config.js";
import { controlPlaneConfigSchema } from "@gatehouse/control-plane/config.js";
import { parse as parseYaml } from "yaml";
import { z } from "zod";

const problems = (schema: z.ZodType, input: unknown) => {
  const result = schema.safeParse(input);
  assert.equal(result.success, false);
  return z.prettifyError((result as { error: z.ZodError }).error);
};

describe("configuration", () => {
  const connection = {
    name: "claude",
    type: "anthropic",
    upstream: "https://api.anthropic.com",
    credential: { env: "K" },
  };

  test("defaults fill in what is not given", () => {
    const cp = controlPlaneConfigSchema.parse({ connections: [connection] });
    assert.equal(cp.http.listen, "127.0.0.1:7070");
    assert.equal(cp.grpc.listen, "127.0.0.1:7071");
    assert.equal(cp.sessions.maxTtlSeconds, 3600);
    const agent = agentConfigSchema.parse({ controlPlane: { address: "cp:7071" } });
    assert.equal(agent.proxy.listen, "127.0.0.1:7080");
    assert.equal(agent.proxy.maxRequestBytes, 32 * 1024 * 1024);
  });

  test("unknown and misspelt keys are refused by name, with where they are", () => {
    const message = problems(controlPlaneConfigSchema, {
      connections: [{ ...connection, upstrem: "x" }],
      stroe: {},
    });
    assert.match(message, /Unrecognized key: "stroe"/);
    assert.match(message, /Unrecognized key: "upstrem"[\s\S]*connections\[0\]/);
  });

  test("a connection type that does not exist yet is refused, naming the supported ones", () => {
    assert.match(
      problems(controlPlaneConfigSchema, { connections: [{ ...connection, type: "gitlab" }] }),
      /connection type "gitlab" is not supported; supported: anthropic/,
    );
  });

  test("duplicate connection names are refused", () => {
    assert.match(
      problems(controlPlaneConfigSchema, { connections: [connection, connection] }),
      /must be unique/,
    );
  });

  test("TLS to a control plane addressed by IP needs a server name (TLS names cannot be IP addresses)", () => {
    const message = problems(agentConfigSchema, {
      controlPlane: { address: "10.0.0.5:7071", tls: { caFile: "ca.pem" } },
    });
    assert.match(
      message,
      /controlPlane.tls.serverName is required when controlPlane.address is an IP address/,
    );
    assert.ok(
      agentConfigSchema.safeParse({ controlPlane: { address: "cp.internal:7071", tls: {} } }).success,
    );
    assert.ok(
      agentConfigSchema.safeParse({
        controlPlane: { address: "10.0.0.5:7071", tls: { serverName: "cp.internal" } },
      }).success,
    );
    assert.ok(
      agentConfigSchema.safeParse({ controlPlane: { address: "10.0.0.5:7071" } }).success,
      "plaintext is fine",
    );
  });

  test("the identity example is a valid configuration", async () => {
    const text = await readFile(
      new URL("../../../examples/control-plane-identity.yaml", import.meta.url),
      "utf8",
    );
    const config = controlPlaneConfigSchema.parse(parseYaml(text));
    assert.deepEqual(
      config.identity.providers.map((p) => p.name),
      ["github", "azure-pipelines", "entra", "gitlab"],
    );
  });

  test("policies and approvals: the issue's YAML is accepted; a bad rule is refused at start-up, by field", () => {
    const yaml = parseYaml(`
policies:
  - name: ci-default
    connections: [claude]
    rules:
      - name: no-private-keys
        when: request
        match: { text: "BEGIN [A-Z ]*PRIVATE KEY" }
        action: deny
        message: Private keys must not be sent to the model.
approvals: { timeoutSeconds: 600, webhooks: [ { url: "https://hooks.example/T1/B2" } ] }
`) as Record<string, unknown>;
    const parsed = controlPlaneConfigSchema.parse({ connections: [connection], ...yaml });
    assert.equal(parsed.policies[0]?.rules[0]?.action, "deny");
    assert.deepEqual(parsed.approvals, {
      timeoutSeconds: 600,
      webhooks: [{ url: "https://hooks.example/T1/B2", format: "slack" }],
    });
    const defaults = controlPlaneConfigSchema.parse({ connections: [connection] });
    assert.deepEqual([defaults.policies, defaults.approvals], [[], { timeoutSeconds: 300, webhooks: [] }]);

    const refused = (policies: unknown, approvals?: unknown) =>
      problems(controlPlaneConfigSchema, {
        connections: [connection],
        policies,
        ...(approvals ? { approvals } : {}),
      });
    const rule = { name: "r", when: "request", match: { text: "x" }, action: "deny" };
    assert.match(
      refused([{ name: "p", connections: ["nope"], rules: [rule] }]),
      /no connection is named 'nope'[\s\S]*policies\[0\]\.connections\[0\]/,
    );
    assert.match(
      refused([{ name: "p", rules: [{ ...rule, match: { toolInput: "x" } }] }]),
      /request rules match on text, system, model, tool, toolResult, maxTokensAbove[\s\S]*policies\[0\]\.rules\[0\]\.match\.toolInput/,
    );
    assert.match(
      refused([{ name: "p", rules: [{ ...rule, match: { text: "(" } }] }]),
      /not a valid JavaScript regular expression[\s\S]*policies\[0\]\.rules\[0\]\.match\.text/,
    );
    assert.match(refused([{ name: "p", rules: [{ ...rule, match: {} }] }]), /at least one field/);
    assert.match(refused([{ name: "p", rules: [rule, rule] }]), /rule names must be unique/);
    assert.match(
      refused([
        { name: "p", rules: [rule] },
        { name: "p", rules: [rule] },
      ]),
      /policy names must be unique/,
    );
    assert.match(refused([], { timeoutSeconds: 1 }), /approvals\.timeoutSeconds/);
    assert.match(refused([], { webhooks: [{ url: "ftp://x" }] }), /approvals\.webhooks\[0\]\.url/);
  });

  test("custom masking patterns: the issue's YAML is accepted, and a pattern agents could not use is refused at start-up, by field", () => {
    const yaml = parseYaml(
      'masking: { custom: [ { name: internal-host, pattern: "corp-[a-z]+\\\\.internal" } ] }',
    ) as Record<string, unknown>;
    const parsed = controlPlaneConfigSchema.parse({ connections: [connection], ...yaml });
    assert.deepEqual(parsed.masking.custom, [{ name: "internal-host", pattern: "corp-[a-z]+\\.internal" }]);
    assert.deepEqual(controlPlaneConfigSchema.parse({ connections: [connection] }).masking, { custom: [] });

    const refused = (custom: unknown) =>
      problems(controlPlaneConfigSchema, { connections: [connection], masking: { custom } });
    const invalid = refused([
      { name: "ok", pattern: "x" },
      { name: "api-key", pattern: "sk-(live" },
    ]);
    assert.match(invalid, /not a valid JavaScript regular expression[\s\S]*masking\.custom\[1\]\.pattern/);
    // The engine's own message quotes the pattern, which may be close to a secret: it is not repeated.
    assert.ok(!invalid.includes("sk-(live"), invalid);
    assert.match(
      refused([{ name: "anything", pattern: "[A-Z]*" }]),
      /matches empty text[\s\S]*masking\.custom\[0\]\.pattern/,
    );
    assert.match(
      refused([{ name: "Internal Host", pattern: "corp" }]),
      /lower-case letters, digits and '-'[\s\S]*masking\.custom\[0\]\.name/,
    );
    assert.match(
      refused([{ name: "big", pattern: "x+", maxLength: 5000 }]),
      /masking\.custom\[0\]\.maxLength/,
    );
    assert.match(refused([{ name: "x", pattern: "x", flags: "i" }]), /Unrecognized key: "flags"/);
  });

  test("identity providers: plain http only on loopback, rules only for configured connections", () => {
    const provider = (issuer: string, connections: string[]) => ({
      name: "ci",
      issuer,
      audience: "gatehouse",
      rules: [{ match: { repository: "contoso/*" }, connections }],
    });
    assert.doesNotThrow(() =>
      controlPlaneConfigSchema.parse({
        connections: [connection],
        identity: { providers: [provider("http://127.0.0.1:8080", ["claude"])] },
      }),
    );
    const http = problems(controlPlaneConfigSchema, {
      connections: [connection],
      identity: { providers: [provider("http://issuer.internal", ["claude"])] },
    });
    assert.match(
      http,
      /plain http is allowed only for 127\.0\.0\.1, localhost or \[::1\][\s\S]*identity\.providers\[0\]\.issuer/,
    );
    const unknown = problems(controlPlaneConfigSchema, {
      connections: [connection],
      identity: { providers: [provider("https://token.actions.githubusercontent.com", ["clade"])] },
    });
    assert.match(
      unknown,
      /no connection is named 'clade'; known: claude[\s\S]*identity\.providers\[0\]\.rules\[0\]\.connections\[0\]/,
    );
    const empty = problems(controlPlaneConfigSchema, {
      connections: [connection],
      identity: {
        providers: [
          { ...provider("https://gitlab.com", ["claude"]), rules: [{ match: {}, connections: ["claude"] }] },
        ],
      },
    });
    assert.match(empty, /a rule must match at least one claim/);
    const twice = problems(controlPlaneConfigSchema, {
      connections: [connection],
      identity: {
        providers: [
          provider("https://gitlab.com", ["claude"]),
          { ...provider("https://gitlab.com", ["claude"]), name: "gitlab-2" },
        ],
      },
    });
    assert.match(twice, /two providers have the same issuer and audience/);
  });
});

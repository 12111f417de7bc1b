/** Helpers of the policy and approval tests. */
import assert from "node:assert/strict";
import Anthropic from "@anthropic-ai/sdk";
import type { TestGatehouse } from "./gatehouse.js";

/** The error the Anthropic SDK threw; fails the test when the call succeeded or threw something else. */
export async function apiError(promise: Promise<unknown>): Promise<InstanceType<typeof Anthropic.APIError>> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof Anthropic.APIError) return error;
    throw error;
  }
  assert.fail("the request succeeded");
}

/** A new API key with `role`, made with the admin token. */
export async function makeKey(gh: TestGatehouse, role: string, name = `${role}-key`): Promise<string> {
  const res = await fetch(`${gh.cp.httpUrl}/v1/api-keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${gh.adminToken}`, "content-type": "application/json" },
    body: JSON.stringify({ name, role }),
  });
  assert.equal(res.status, 201);
  return ((await res.json()) as { key: string }).key;
}

/**
 * Secrets in events that come whole (not as text streams): content_block_start payloads (server
 * tool results, a tool input given up front) and citations deltas are masked in their string
 * values; signatures, which the API verifies, pass byte for byte.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Masker } from "@gatehouse/agent/masking/masker.js";
import { ResponseMasking } from "@gatehouse/agent/proxy/anthropic/masking.js";
import type { SseBlock } from "@gatehouse/agent/proxy/sse.js";
import { CANARIES } from "../support/masking-canaries.js";

const token = CANARIES.find((c) => c.type === "github-token")?.secret ?? "";

function block(event: string, data: unknown): SseBlock {
  const text = JSON.stringify(data);
  return { raw: Buffer.from(`event: ${event}\ndata: ${text}\n\n`), event, data: text, hasData: true };
}

function masking() {
  const counts = new Map<string, number>();
  const rewriter = new ResponseMasking(
    { masked: (type, n) => counts.set(type, (counts.get(type) ?? 0) + n) },
    new Masker(),
  );
  return { rewriter, counts };
}

describe("masking events that come whole", () => {
  test("a server tool result in content_block_start is masked in its string values", () => {
    const { rewriter, counts } = masking();
    const start = block("content_block_start", {
      type: "content_block_start",
      index: 1,
      content_block: {
        type: "web_search_tool_result",
        tool_use_id: "srvtoolu_1",
        content: [
          {
            type: "web_search_result",
            title: "leaked",
            url: "https://x.example",
            encrypted_content: "abc",
            page_age: null,
            text: `token ${token}`,
          },
        ],
      },
    });
    const [out] = rewriter.event(start);
    assert.ok(out);
    assert.ok(!out.data.includes(token));
    assert.match(out.data, /token \[MASKED:github-token\]/);
    assert.ok(!out.raw.toString().includes(token));
    assert.equal(counts.get("github-token"), 1);
    assert.equal(JSON.parse(out.data).content_block.tool_use_id, "srvtoolu_1");
  });

  test("a citations delta is masked; a start with nothing to mask passes as the same bytes", () => {
    const { rewriter } = masking();
    const citation = block("content_block_delta", {
      type: "content_block_delta",
      index: 0,
      delta: {
        type: "citations_delta",
        citation: { type: "char_location", cited_text: `key: ${token}`, document_index: 0 },
      },
    });
    const [masked] = rewriter.event(citation);
    assert.ok(masked && !masked.data.includes(token));
    const plain = block("content_block_start", {
      type: "content_block_start",
      index: 0,
      content_block: { type: "text", text: "" },
    });
    assert.equal(rewriter.event(plain)[0], plain);
  });

  test("signatures pass byte for byte, even one that looks like a secret", () => {
    const { rewriter } = masking();
    const signature = block("content_block_delta", {
      type: "content_block_delta",
      index: 0,
      delta: { type: "signature_delta", signature: token },
    });
    assert.equal(rewriter.event(signature)[0], signature);
    const start = block("content_block_start", {
      type: "content_block_start",
      index: 0,
      content_block: { type: "thinking", thinking: "", signature: token },
    });
    assert.equal(rewriter.event(start)[0], start);
    const body = Buffer.from(
      JSON.stringify({ content: [{ type: "thinking", thinking: "t", signature: token }] }),
    );
    assert.equal(rewriter.body(body), body);
  });
});

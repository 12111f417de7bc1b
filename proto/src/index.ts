/**
 * The AgentLink wire contract: one loader with fixed options, so that every
 * process decodes messages into the same shapes the generated types describe.
 *
 * @see ../gatehouse/v1/agent_link.proto
 */
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import type { ProtoGrpcType } from "./generated/agent_link.js";
import type { SessionEvent, SessionEvent__Output } from "./generated/gatehouse/v1/SessionEvent.js";

export type * from "./generated/gatehouse/v1/index.js";

/** Absolute path of the `.proto` file, for tools that need it. */
export const PROTO_PATH = fileURLToPath(new URL("../gatehouse/v1/agent_link.proto", import.meta.url));

/**
 * The options the generated types were made with (see scripts/proto-types.mjs).
 * Changing one here without regenerating would make the types lie.
 */
export const LOADER_OPTIONS = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
} as const satisfies protoLoader.Options;

let loaded: ProtoGrpcType | undefined;

/** The `gatehouse.v1` package as grpc-js service constructors, loaded once per process. */
export function loadAgentLink(): ProtoGrpcType["gatehouse"]["v1"] {
  loaded ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(PROTO_PATH, LOADER_OPTIONS),
  ) as unknown as ProtoGrpcType;
  return loaded.gatehouse.v1;
}

const root = protobuf.loadSync(PROTO_PATH);
const sessionEventType = root.lookupType("gatehouse.v1.SessionEvent");
const toObjectOptions: protobuf.IConversionOptions = LOADER_OPTIONS;

/**
 * Binary codec for {@link SessionEvent}, used where events are kept outside a
 * gRPC call (the agent's spool). Decoding yields exactly what grpc-js delivers.
 */
export const sessionEventCodec = {
  encode(event: SessionEvent): Uint8Array {
    return sessionEventType.encode(sessionEventType.fromObject(event)).finish();
  },
  decode(bytes: Uint8Array): SessionEvent__Output {
    return sessionEventType.toObject(sessionEventType.decode(bytes), toObjectOptions) as SessionEvent__Output;
  },
};

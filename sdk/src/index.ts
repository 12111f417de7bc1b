export * from "./ci-identity.js";
export * from "./client.js";
export * from "./exec.js";

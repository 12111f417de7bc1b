export * from "./client.js";
export * from "./exec.js";

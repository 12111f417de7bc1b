/** Who is calling the REST API, and what they may do. */
import { sameSecret } from "./tokens.js";

export type Role = "admin" | "approver" | "auditor";

export interface Principal {
  kind: "api-key";
  id: string;
  role: Role;
}

/**
 * Authenticates REST callers by bearer API key. For now the only key is the
 * bootstrap admin token (`GATEHOUSE_ADMIN_TOKEN`).
 */
export class ApiKeyAuthenticator {
  constructor(private readonly bootstrapAdminToken: string | undefined) {}

  authenticate(bearer: string): Principal | null {
    if (this.bootstrapAdminToken && sameSecret(bearer, this.bootstrapAdminToken)) {
      return { kind: "api-key", id: "bootstrap-admin", role: "admin" };
    }
    return null;
  }
}

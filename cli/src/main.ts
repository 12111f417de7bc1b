#!/usr/bin/env node
/**
 * The `gatehouse` command. This is the process entry: the only place that
 * reads argv and the environment, which it hands to the commands.
 */
import { parseArgs } from "node:util";
import { isGatehouseError } from "@gatehouse/proto/errors";
import {
  CI_TOKEN_SOURCES,
  DEFAULT_AUDIENCE,
  DEFAULT_GITLAB_TOKEN_VARIABLE,
  GatehouseApiError,
} from "@gatehouse/sdk";
import {
  agentsCreate,
  approvalReason,
  approvalStatus,
  approvalsDecide,
  approvalsList,
  approvalsShow,
  connect,
  exec,
  sessionsClose,
  sessionsEvents,
  sessionsList,
  sessionsShow,
  sessionsVerify,
  UsageError,
} from "./client.js";
import { ConfigError } from "./config.js";
import { agent, controlPlane, up } from "./serve.js";

const USAGE = `Usage:
  gatehouse up --config FILE [--data DIR] [--http ADDR] [--grpc ADDR] [--proxy ADDR]
                                   control plane, one agent and the embedded store, in one process
  gatehouse control-plane --config FILE [--data DIR]
  gatehouse agent --config FILE [--data DIR]
  gatehouse sessions list [--connection NAME] [--status open|closed|expired] [--limit N] [--cursor C] [--json]
  gatehouse sessions show ID [--json]
  gatehouse sessions events ID [--follow]
  gatehouse sessions verify ID [--jwks FILE] [--json]
                                   prove a record complete and unaltered (exit 1 if not)
  gatehouse sessions close ID
  gatehouse approvals list [--status pending|approved|denied|expired|cancelled] [--limit N] [--cursor C] [--json]
  gatehouse approvals show ID [--json]
                                   an approval, with what it holds
  gatehouse approvals approve ID --reason TEXT [--json]
  gatehouse approvals deny ID --reason TEXT [--json]
                                   decide a pending approval (role approver; not your own session's)
  gatehouse agents create NAME [--connection NAME]... [--json]
                                   an agent account (default: it may serve every connection)
  gatehouse exec --connection NAME [--ttl SECONDS] [--label KEY=VALUE]...
                 [--oidc SOURCE [--audience AUD] [--azure-service-connection ID]] -- COMMAND [ARGS...]
                                   run COMMAND through a session; with --oidc the CI job's OIDC ID
                                   token opens it, so no API key is needed. SOURCE: ${CI_TOKEN_SOURCES}

Client commands reach the control plane at --url, GATEHOUSE_URL or http://127.0.0.1:7070, with the
API key in GATEHOUSE_TOKEN, GATEHOUSE_ADMIN_TOKEN or DIR/admin-token (DIR defaults to .gatehouse).
exec --oidc: --audience (default GATEHOUSE_AUDIENCE, else ${DEFAULT_AUDIENCE}) is asked of GitHub Actions;
Azure Pipelines fixes it, a GitLab job sets it in id_tokens (${DEFAULT_GITLAB_TOKEN_VARIABLE} by default).
--azure-service-connection defaults to GATEHOUSE_AZURE_SERVICE_CONNECTION_ID. The tool never sees
the ID token, what obtains it (ACTIONS_ID_TOKEN_REQUEST_TOKEN, SYSTEM_ACCESSTOKEN) or a Gatehouse key.`;

const options = {
  config: { type: "string" },
  data: { type: "string", default: ".gatehouse" },
  http: { type: "string" },
  grpc: { type: "string" },
  proxy: { type: "string" },
  url: { type: "string" },
  json: { type: "boolean" },
  connection: { type: "string" },
  status: { type: "string" },
  limit: { type: "string" },
  cursor: { type: "string" },
  follow: { type: "boolean" },
  reason: { type: "string" },
  jwks: { type: "string" },
  ttl: { type: "string" },
  label: { type: "string", multiple: true },
  oidc: { type: "string" },
  audience: { type: "string" },
  "azure-service-connection": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

async function run(argv: string[], env: Readonly<Record<string, string | undefined>>): Promise<number> {
  let parsed: ReturnType<
    typeof parseArgs<{ args: string[]; options: typeof options; allowPositionals: true }>
  >;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values: flags, positionals } = parsed;
  const [command, sub, arg] = positionals;
  if (flags.help || !command) {
    process.stdout.write(`${USAGE}\n`);
    return command || flags.help ? 0 : 2;
  }
  const needConfig = () => {
    if (!flags.config) throw new UsageError(`${command} needs --config FILE`);
    return { ...flags, config: flags.config, data: flags.data };
  };
  const needArg = (what: string) => {
    if (!arg) throw new UsageError(`${command} ${sub} needs ${what}`);
    return arg;
  };
  switch (command) {
    case "up":
      await up(needConfig(), env);
      return 0;
    case "control-plane":
      await controlPlane(needConfig(), env);
      return 0;
    case "agent":
      await agent(needConfig(), env);
      return 0;
    case "sessions": {
      const client = await connect(flags, env);
      if (sub === "list") await sessionsList(client, flags);
      else if (sub === "show") await sessionsShow(client, needArg("a session id"), flags);
      else if (sub === "events") await sessionsEvents(client, needArg("a session id"), flags.follow ?? false);
      else if (sub === "close") await sessionsClose(client, needArg("a session id"));
      else if (sub === "verify") return sessionsVerify(client, needArg("a session id"), flags);
      else
        throw new UsageError(
          `unknown sessions command '${sub ?? ""}'; use list, show, events, verify or close`,
        );
      return 0;
    }
    case "approvals": {
      // Arguments are checked before the control plane is looked for, so a mistake is named first.
      if (sub === "list") {
        const status = approvalStatus(flags.status);
        await approvalsList(await connect(flags, env), { ...flags, status });
      } else if (sub === "show") {
        const id = needArg("an approval id");
        await approvalsShow(await connect(flags, env), id, flags);
      } else if (sub === "approve" || sub === "deny") {
        const id = needArg("an approval id");
        const reason = approvalReason(sub, flags.reason);
        await approvalsDecide(await connect(flags, env), sub, id, reason, flags);
      } else {
        throw new UsageError(`unknown approvals command '${sub ?? ""}'; use list, show, approve or deny`);
      }
      return 0;
    }
    case "agents": {
      if (sub !== "create") throw new UsageError(`unknown agents command '${sub ?? ""}'; use create`);
      // --connection may repeat here (one per connection the account may serve); elsewhere it names one.
      const connections = parseArgs({
        args: argv,
        options: { ...options, connection: { type: "string", multiple: true } },
        allowPositionals: true,
      }).values.connection;
      await agentsCreate(await connect(flags, env), needArg("a name"), {
        ...flags,
        connections: connections ?? [],
      });
      return 0;
    }
    case "exec": {
      if (!flags.connection) throw new UsageError("exec needs --connection NAME");
      return exec(
        {
          ...flags,
          connection: flags.connection,
          labels: flags.label ?? [],
          azureServiceConnection: flags["azure-service-connection"],
        },
        positionals.slice(1),
        env,
      );
    }
    default:
      throw new UsageError(`unknown command '${command}'`);
  }
}

run(process.argv.slice(2), process.env).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`gatehouse: ${error.message}\n\n${USAGE}\n`);
      process.exitCode = 2;
    } else if (error instanceof ConfigError) {
      process.stderr.write(`gatehouse: ${error.message}\n`);
      process.exitCode = 2;
    } else if (error instanceof GatehouseApiError || isGatehouseError(error)) {
      process.stderr.write(`gatehouse: ${error.code}: ${error.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(
        `gatehouse: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
      process.exitCode = 1;
    }
  },
);

/**
 * Structured JSON logs on stderr, one logger per component, with a level per
 * component from configuration (`log.components`) or GATEHOUSE_LOG_LEVEL.
 */
import { type Level, type Logger, pino } from "pino";

export interface LogSettings {
  level: Level | "silent";
  components: Readonly<Record<string, Level | "silent">>;
}

export function createLogging(settings: LogSettings): (component: string) => Logger {
  const root = pino(
    {
      level: "trace",
      base: { pid: process.pid },
      // Belt and braces: these paths never carry secrets in Gatehouse's own lines, but a
      // library's error object could. Redaction happens before any sink sees the line.
      redact: {
        paths: [
          "*.authorization",
          "*.headers.authorization",
          "*.headers['x-api-key']",
          "*.token",
          "*.credential",
        ],
        censor: "[REDACTED]",
      },
    },
    pino.destination({ fd: 2, sync: false }),
  );
  return (component) =>
    root.child({ component }, { level: settings.components[component] ?? settings.level });
}

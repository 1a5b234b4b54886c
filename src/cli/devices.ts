// `npm run devices -- …`: issue and revoke device tokens and API keys in the credentials file the
// service reads (CREDENTIALS_FILE, by default DATA_DIR/credentials.json). A secret is printed once,
// alone on stdout (so scripts can capture it), and only its hash is kept. Running services pick up
// changes within about a second.
import { Command, InvalidArgumentError, Option } from "commander";
import { ConfigError, loadConfig } from "../config.js";
import {
  addApiKey,
  addDevice,
  CredentialsFileError,
  readCredentials,
  revokeApiKey,
  revokeDevice,
  updateCredentials,
  type ApiKeyRole,
  type Credentials,
} from "../auth/credentials.js";

const program = new Command("devices")
  .description("Manage device tokens and partner/operator API keys for wattstream.")
  .option("--file <path>", "credentials file (default: CREDENTIALS_FILE, else DATA_DIR/credentials.json)")
  .showHelpAfterError();

const collect = (value: string, previous: string[]) => [...previous, value];

program
  .command("add")
  .description("register a device (or re-admit a revoked one) and print a new token for it")
  .argument("<device-id>", "the device_id its readings carry")
  .option("--fleet <name>", "the fleet it belongs to (partner keys can be scoped to fleets)")
  .action(async (deviceId: string, options: { fleet?: string }) => {
    const { token, tokenId } = await update((credentials) => addDevice(credentials, deviceId, { fleet: options.fleet }));
    note(`device ${deviceId}: token ${tokenId} issued; it is shown only now. Send it as "authorization: Bearer <token>".`);
    process.stdout.write(`${token}\n`);
  });

program
  .command("revoke")
  .description("revoke a device (all its tokens and its client certificate), or one token with --token")
  .argument("<device-id>")
  .option("--token <id>", "revoke only this token (its id from `list`), e.g. after rotating")
  .action(async (deviceId: string, options: { token?: string }) => {
    await update((credentials) => ({ credentials: revokeDevice(credentials, deviceId, { tokenId: options.token }) }));
    note(options.token === undefined ? `device ${deviceId} revoked` : `token ${options.token} of device ${deviceId} revoked`);
  });

program
  .command("list")
  .description("list registered devices and their token ids")
  .option("--json", "print JSON")
  .action((options: { json?: boolean }) => {
    const rows = Object.entries(load().devices).map(([deviceId, d]) => ({
      device: deviceId,
      fleet: d.fleet ?? "",
      status: d.revokedAt === undefined ? "active" : `revoked ${d.revokedAt}`,
      tokens: d.tokens.map((t) => t.id).join(","),
      created: d.createdAt,
    }));
    print(rows, options.json);
  });

const keys = program.command("key").description("API keys: partners (scoped, read-only) and operators (whole fleet)");

keys
  .command("add")
  .description("issue an API key and print it")
  .argument("<name>", "who holds it, e.g. acme-insurance")
  .addOption(new Option("--role <role>", "partner: device status for its scope; operator: FleetService").choices(["partner", "operator"]).default("partner"))
  .option("--device <id>", "a device the partner may read (repeatable)", collect, [])
  .option("--fleet <name>", "a fleet the partner may read (repeatable)", collect, [])
  .action(async (name: string, options: { role: ApiKeyRole; device: string[]; fleet: string[] }) => {
    const { key, keyId } = await update((credentials) => addApiKey(credentials, name, { role: options.role, devices: options.device, fleets: options.fleet }));
    note(`${options.role} key ${name} (${keyId}) issued; it is shown only now. Send it as "x-api-key: <key>".`);
    process.stdout.write(`${key}\n`);
  });

keys
  .command("revoke")
  .argument("<name>")
  .action(async (name: string) => {
    await update((credentials) => ({ credentials: revokeApiKey(credentials, name) }));
    note(`key ${name} revoked`);
  });

keys
  .command("list")
  .option("--json", "print JSON")
  .action((options: { json?: boolean }) => {
    const rows = Object.entries(load().apiKeys).map(([name, k]) => ({
      key: name,
      role: k.role,
      scope: k.role === "operator" ? "every device" : [...k.devices.map((d) => `device:${d}`), ...k.fleets.map((f) => `fleet:${f}`)].join(","),
      status: k.revokedAt === undefined ? "active" : `revoked ${k.revokedAt}`,
      id: k.token?.id ?? "",
      created: k.createdAt,
    }));
    print(rows, options.json);
  });

function credentialsFile(): string {
  const file = program.opts<{ file?: string }>().file;
  if (file !== undefined) return file;
  return loadConfig().auth.credentialsFile;
}

function load(): Credentials {
  return readCredentials(credentialsFile());
}

/** Applies a change to the file under its lock; answers what the change answered. */
function update<T extends { readonly credentials: Credentials }>(change: (credentials: Credentials) => T): Promise<T> {
  return updateCredentials(credentialsFile(), change);
}

function note(message: string): void {
  process.stderr.write(`${message}\n`);
}

function print(rows: Record<string, string>[], json: boolean | undefined): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    return;
  }
  if (rows.length === 0) {
    note("none");
    return;
  }
  const columns = Object.keys(rows[0]!);
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: string[]) => cells.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd();
  process.stdout.write([line(columns.map((c) => c.toUpperCase())), ...rows.map((r) => line(columns.map((c) => r[c]!)))].join("\n") + "\n");
}

try {
  await program.parseAsync();
} catch (error) {
  if (error instanceof CredentialsFileError || error instanceof ConfigError || error instanceof InvalidArgumentError) {
    process.stderr.write(`devices: ${error.message}\n`);
    process.exit(2);
  }
  throw error;
}

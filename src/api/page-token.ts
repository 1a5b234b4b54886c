// Page tokens: opaque to clients (base64url JSON), checked on the way back in, so a token from
// another call or a hand-made one is refused with INVALID_ARGUMENT instead of misread.
import { Code, ConnectError } from "@connectrpc/connect";

export function encodePageToken(position: object): string {
  return Buffer.from(JSON.stringify(position)).toString("base64url");
}

export function decodePageToken<T>(token: string, isPosition: (value: unknown) => value is T): T {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    value = undefined;
  }
  if (!isPosition(value)) throw new ConnectError("page_token is not a token this call returned; start again without one", Code.InvalidArgument);
  return value;
}

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RowBinaryWriter } from "./insert-encoding.js";

/** RowBinary's String: the UTF-8 bytes' count as a LEB128 varint, then the bytes. */
function rowBinaryString(value: string): number[] {
  const utf8 = [...new TextEncoder().encode(value)];
  const length: number[] = [];
  let rest = utf8.length;
  do {
    length.push((rest & 0x7f) | (rest >= 0x80 ? 0x80 : 0));
    rest >>>= 7;
  } while (rest > 0);
  return [...length, ...utf8];
}

describe("RowBinaryWriter strings", () => {
  it("writes any text as RowBinary's String, short ASCII or not, one after another", () => {
    const unit = fc.oneof(
      fc.string({ unit: "binary", maxLength: 3 }),
      fc.constantFrom("a", "~", "\x7f", "\x80", "é", "\uFF5E", "\u{1F600}", "\uD83D", "\uDE00"),
    );
    // Long enough to cross the one-byte length at 128 bytes, in ASCII and in longer characters.
    const text = fc.oneof(
      fc.array(unit, { maxLength: 8 }).map((parts) => parts.join("")),
      fc.tuple(fc.integer({ min: 120, max: 140 }), unit).map(([n, tail]) => "x".repeat(n) + tail),
    );
    fc.assert(
      fc.property(fc.array(text, { maxLength: 4 }), (values) => {
        const writer = new RowBinaryWriter();
        for (const value of values) writer.string(value);
        expect([...writer.finish()]).toEqual(values.flatMap(rowBinaryString));
      }),
      { numRuns: 2_000 },
    );
  });
});

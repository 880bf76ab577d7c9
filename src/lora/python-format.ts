// Python's text forms that PEFT's files and printouts use: json.dumps(indent=2, sort_keys=True) with
// float repr and ASCII escaping, format(n, ",d") and format(x, ".4f") (round half to even on ties).
import { TunaError } from "../util/errors.ts";

/** A number Python holds as a float: json.dumps writes 0.0, not 0. Plain numbers are Python ints. */
export class PyFloat {
  constructor(readonly value: number) {}
}

export type PyJson = null | boolean | string | number | PyFloat | readonly PyJson[] | { readonly [key: string]: PyJson };

/** `json.dumps(value, indent=2, sort_keys=True)`: the exact text, without a trailing newline. */
export function pythonJsonDumps(value: PyJson): string {
  return dump(value, "");
}

function dump(value: PyJson, indent: string): string {
  if (value === null) return "null";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "string") return pythonJsonString(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new TunaError("INTERNAL", `${value} is not an integer; wrap floats in PyFloat`);
    return String(value);
  }
  if (value instanceof PyFloat) return pythonFloatRepr(value.value);
  const inner = `${indent}  `;
  if (isPyList(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((v) => inner + dump(v, inner)).join(",\n")}\n${indent}]`;
  }
  const keys = Object.keys(value).sort(compareCodePoints);
  if (keys.length === 0) return "{}";
  return `{\n${keys.map((k) => `${inner}${pythonJsonString(k)}: ${dump(value[k] ?? null, inner)}`).join(",\n")}\n${indent}}`;
}

function isPyList(value: PyJson): value is readonly PyJson[] {
  return Array.isArray(value);
}

/** Python sorts str keys by code point; for the ASCII keys PEFT writes this equals UTF-16 order. */
export function compareCodePoints(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** json.dumps with ensure_ascii=True: everything outside ' '..'~' is \uXXXX (lowercase hex). */
function pythonJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i] ?? "";
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\b") out += "\\b";
    else if (ch === "\f") out += "\\f";
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, "0")}`;
    else out += ch;
  }
  return `${out}"`;
}

/** Python's repr(float): shortest round-trip digits, scientific below 1e-4 and from 1e16. */
export function pythonFloatRepr(x: number): string {
  if (!Number.isFinite(x)) throw new TunaError("INTERNAL", `cannot write ${x} as JSON`);
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  // toExponential() without digits gives the shortest digits that round-trip, like Python's repr.
  const [mantissa = "", expText = "0"] = Math.abs(x).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    const m = digits.length === 1 ? digits : `${digits[0] ?? ""}.${digits.slice(1)}`;
    const e = Math.abs(exp).toString().padStart(2, "0");
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${e}`;
  }
  if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
  const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
  const frac = digits.slice(exp + 1);
  return `${sign}${intPart}.${frac === "" ? "0" : frac}`;
}

/** format(n, ",d"): 6742609920 -> "6,742,609,920". */
export function groupThousands(n: number): string {
  if (!Number.isSafeInteger(n)) throw new TunaError("INTERNAL", `${n} is not an integer`);
  const digits = Math.abs(n).toString();
  const groups: string[] = [];
  for (let end = digits.length; end > 0; end -= 3) groups.unshift(digits.slice(Math.max(0, end - 3), end));
  return (n < 0 ? "-" : "") + groups.join(",");
}

/**
 * format(x, f".{places}f"). Both round the exact binary value; they differ only on exact ties
 * (e.g. 0.03125 to 4 places), where Python rounds half to even and toFixed rounds up.
 */
export function pythonFixed(x: number, places: number): string {
  const fixed = x.toFixed(places);
  // toFixed(100) is the exact decimal expansion of any double below 1e21 with >= 1e-4 magnitude.
  const exact = Math.abs(x).toFixed(100);
  const dot = exact.indexOf(".");
  const tail = exact.slice(dot + 1 + places);
  if (!/^50*$/.test(tail)) return fixed;
  const lastDigit = Number(fixed[fixed.length - 1]);
  if (lastDigit % 2 === 0) return fixed;
  // toFixed rounded the tie up to an odd digit: step back down by one unit in the last place.
  const truncated = exact.slice(0, dot + 1 + places);
  return (x < 0 ? "-" : "") + (places === 0 ? truncated.slice(0, -1) : truncated);
}

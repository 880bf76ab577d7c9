// The building blocks of the train schema: one FieldSpec per field (zod type, default, doc, group) and
// the conversions HfArgumentParser applies to a command-line string or a YAML/JSON value.
import { z } from "zod";

export type Group = "model" | "data" | "training" | "dpo" | "tuna";

/** Marks a field without a default: the user must give it (HF dataclass fields without a default). */
export const REQUIRED: unique symbol = Symbol("required");

export interface FieldSpec<T> {
  readonly group: Group;
  /** Other names of the same field (old or newer HF names), accepted as flags and file keys. */
  readonly aliases: readonly string[];
  /** What a value must look like, shown in help and in error messages: "int >= 1", "nf4|fp4". */
  readonly type: string;
  readonly default: T | typeof REQUIRED;
  readonly doc: string;
  /** Validates a converted value. */
  readonly schema: z.ZodType<T>;
  /** A bare flag (no value) means true, as with HfArgumentParser's `nargs="?", const=True`. */
  readonly isBool: boolean;
  /** Turns a command-line string into a candidate value (the schema then decides). */
  readonly fromString: (raw: string) => unknown;
  /** Turns a YAML/JSON value into a candidate value; strings get the command-line conversion. */
  readonly fromFile: (value: unknown) => unknown;
  /** Only meaningful on the command line (e.g. --config); an error inside a config file. */
  readonly cliOnly: boolean;
}

interface Common {
  group: Group;
  doc: string;
  aliases?: readonly string[];
  cliOnly?: boolean;
}

const TRUE_WORDS = ["yes", "true", "t", "y", "1"];
const FALSE_WORDS = ["no", "false", "f", "n", "0"];

/** transformers' string_to_bool: case-insensitive yes/true/t/y/1 and no/false/f/n/0. */
export function parseBoolWord(raw: string): boolean | undefined {
  const word = raw.toLowerCase();
  if (TRUE_WORDS.includes(word)) return true;
  if (FALSE_WORDS.includes(word)) return false;
  return undefined;
}

const INT_PATTERN = /^[-+]?\d+$/;
const FLOAT_PATTERN = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

function stringToNumber(raw: string, integer: boolean): unknown {
  const text = raw.trim();
  if (integer ? INT_PATTERN.test(text) : FLOAT_PATTERN.test(text)) return Number(text);
  return raw;
}

function stringToBool(raw: string): unknown {
  return parseBoolWord(raw.trim()) ?? raw;
}

/** "a,b, c" -> ["a", "b", "c"]; empty items are dropped so a trailing comma is harmless. */
export function splitCommaList(raw: string): string[] {
  return raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function fileValue(fromString: (raw: string) => unknown): (value: unknown) => unknown {
  return (value) => (typeof value === "string" ? fromString(value) : value);
}

/** A field with its own type text, schema and string conversion (for shapes the helpers below lack). */
export function customField<T>(
  o: Common,
  type: string,
  defaultValue: T | typeof REQUIRED,
  schema: z.ZodType<T>,
  fromString: (raw: string) => unknown,
  isBool = false,
): FieldSpec<T> {
  return {
    group: o.group,
    aliases: o.aliases ?? [],
    type,
    default: defaultValue,
    doc: o.doc,
    schema,
    isBool,
    fromString,
    fromFile: fileValue(fromString),
    cliOnly: o.cliOnly ?? false,
  };
}

export function boolField(o: Common & { default: boolean }): FieldSpec<boolean> {
  return { ...customField(o, "bool", o.default, z.boolean(), stringToBool, true), fromFile: boolFromFile };
}

/** A tri-state boolean: unset means "decide from the data" (TRL's completion_only_loss=None). */
export function optionalBoolField(o: Common): FieldSpec<boolean | undefined> {
  return { ...customField(o, "bool", undefined, z.boolean().optional(), stringToBool, true), fromFile: boolFromFile };
}

function boolFromFile(value: unknown): unknown {
  if (typeof value === "string") return stringToBool(value);
  if (value === 0 || value === 1) return value === 1;
  return value;
}

interface NumberRange {
  min?: number;
  max?: number;
  /** The bound itself is excluded: (min, ...] or [..., max). */
  minOpen?: boolean;
  maxOpen?: boolean;
}

function rangeText(r: NumberRange): string {
  if (r.min !== undefined && r.max !== undefined) {
    return `in ${r.minOpen === true ? "(" : "["}${r.min}, ${r.max}${r.maxOpen === true ? ")" : "]"}`;
  }
  if (r.min !== undefined) return `${r.minOpen === true ? ">" : ">="} ${r.min}`;
  if (r.max !== undefined) return `${r.maxOpen === true ? "<" : "<="} ${r.max}`;
  return "";
}

function numberSchema(integer: boolean, r: NumberRange): z.ZodNumber {
  let s = integer ? z.number().int() : z.number();
  if (r.min !== undefined) s = r.minOpen === true ? s.gt(r.min) : s.gte(r.min);
  if (r.max !== undefined) s = r.maxOpen === true ? s.lt(r.max) : s.lte(r.max);
  return s;
}

function numberType(integer: boolean, r: NumberRange): string {
  return `${integer ? "int" : "float"} ${rangeText(r)}`.trim();
}

export function intField(o: Common & NumberRange & { default: number }): FieldSpec<number> {
  return customField(o, numberType(true, o), o.default, numberSchema(true, o), (raw) => stringToNumber(raw, true));
}

export function optionalIntField(o: Common & NumberRange): FieldSpec<number | undefined> {
  const schema = numberSchema(true, o).optional();
  return customField(o, numberType(true, o), undefined, schema, (raw) => stringToNumber(raw, true));
}

export function floatField(o: Common & NumberRange & { default: number }): FieldSpec<number> {
  return customField(o, numberType(false, o), o.default, numberSchema(false, o), (raw) => stringToNumber(raw, false));
}

export function optionalFloatField(o: Common & NumberRange): FieldSpec<number | undefined> {
  const schema = numberSchema(false, o).optional();
  return customField(o, numberType(false, o), undefined, schema, (raw) => stringToNumber(raw, false));
}

/** HF's logging/eval/save steps: an integer >= 1, or a float in (0, 1) meaning a ratio of max_steps. */
const stepsSchema = z.number().gt(0).refine((v) => v < 1 || Number.isInteger(v));
const STEPS_TYPE = "int >= 1 (or ratio in (0, 1))";

/** `zero`: 0 is accepted too (warmup_steps: none). */
export function stepsField(o: Common & { default: number; zero?: boolean }): FieldSpec<number> {
  const schema = o.zero === true ? z.number().gte(0).refine((v) => v < 1 || Number.isInteger(v)) : stepsSchema;
  return customField(o, o.zero === true ? "0, int >= 1 (or ratio in (0, 1))" : STEPS_TYPE, o.default, schema, (raw) => stringToNumber(raw, false));
}

export function optionalStepsField(o: Common): FieldSpec<number | undefined> {
  return customField(o, STEPS_TYPE, undefined, stepsSchema.optional(), (raw) => stringToNumber(raw, false));
}

const textSchema = z.string().min(1);

export function textField(o: Common & { default: string | typeof REQUIRED }): FieldSpec<string> {
  return customField(o, "str", o.default, textSchema, (raw) => raw);
}

export function optionalTextField(o: Common): FieldSpec<string | undefined> {
  return customField(o, "str", undefined, textSchema.optional(), (raw) => raw);
}

export function choiceField<const C extends readonly [string, ...string[]]>(
  o: Common & { choices: C; default: C[number] },
): FieldSpec<C[number]> {
  return customField(o, o.choices.join("|"), o.default, z.enum(o.choices), (raw) => raw.trim());
}

/** A comma list of numbers on the command line, a YAML/JSON list (or comma string) of numbers in a file; unset by default. */
export function optionalNumberListField(o: Common): FieldSpec<number[] | undefined> {
  const fromString = (raw: string): unknown => splitCommaList(raw).map((item) => stringToNumber(item, false));
  return customField(o, "comma list of float", undefined, z.array(z.number()).min(1).optional(), fromString);
}

/** A comma list on the command line, a YAML/JSON list or comma string in a file. */
export function listField<T extends string>(
  o: Common & { default: T[]; item: z.ZodType<T>; itemType: string; check?: (items: T[]) => boolean },
): FieldSpec<T[]> {
  const list = z.array(o.item).min(1);
  const schema = o.check === undefined ? list : list.refine(o.check);
  return customField(o, `comma list of ${o.itemType}`, o.default, schema, splitCommaList);
}

// Rendering an untrusted Jinja template with bounded time and memory. @huggingface/jinja parses and
// interprets; we give it our own globals (a range() limited as Python's sandbox limits it) and an
// interpreter that counts its steps, checks a deadline, and refuses strings past a size limit.
//
// Written here because the library has no limits of its own: a template from a model's
// tokenizer_config.json or --chat_template_file could loop 200 million times or double a string until
// the process runs out of memory. Python's ImmutableSandboxedEnvironment refuses range() over
// MAX_RANGE (100,000) items; nested loops and growing strings are bounded here by steps, time and size.
import { Environment, Interpreter, type Template } from "@huggingface/jinja";

// The package's index.d.ts imports "./runtime" without an extension, which NodeNext resolution cannot
// follow, so the two classes are typed here by the members we use.
interface JinjaValue {
  value: unknown;
}
interface JinjaEnvironment {
  set(name: string, value: unknown): unknown;
}
interface JinjaInterpreter {
  evaluate(statement: unknown, environment: JinjaEnvironment): JinjaValue;
  run(program: unknown): JinjaValue;
}
const InterpreterBase = Interpreter as unknown as new (env: JinjaEnvironment) => JinjaInterpreter;
const EnvironmentClass = Environment as unknown as new () => JinjaEnvironment;

export interface RenderLimits {
  /** Largest range() a template may build (Python's sandbox: MAX_RANGE = 100,000). */
  maxRange: number;
  /** Wall-clock time one render may take. */
  maxMs: number;
  /** Longest string (output or intermediate) a render may build, in UTF-16 code units. */
  maxStringLength: number;
}

export const DEFAULT_RENDER_LIMITS: RenderLimits = { maxRange: 100_000, maxMs: 10_000, maxStringLength: 64 * 1024 * 1024 };

/** Thrown (as a plain Error, wrapped by the caller) when a template exceeds a limit. */
export class TemplateLimitError extends Error {}


// The deadline is checked every this many steps (a step is one node of the template's syntax tree). A step
// can be slow: a for loop with an empty body over range(100,000) is one step and takes ~2 s in the library.
const STEPS_PER_CHECK = 16;

class BoundedInterpreter extends InterpreterBase {
  private steps = 0;
  private readonly deadline: number;

  constructor(
    env: JinjaEnvironment,
    private readonly limits: RenderLimits,
  ) {
    super(env);
    this.deadline = performance.now() + limits.maxMs;
  }

  override evaluate(statement: unknown, environment: JinjaEnvironment): JinjaValue {
    if (++this.steps % STEPS_PER_CHECK === 0 && performance.now() > this.deadline) {
      throw new TemplateLimitError(
        `the template ran for more than ${this.limits.maxMs / 1000} s (${this.steps.toLocaleString("en-US")} steps); ` +
          "a chat template must not loop without bound",
      );
    }
    const result = super.evaluate(statement, environment);
    const value = result.value;
    if (typeof value === "string" && value.length > this.limits.maxStringLength) {
      throw new TemplateLimitError(
        `the template built a string of ${value.length.toLocaleString("en-US")} characters, over the limit of ` +
          this.limits.maxStringLength.toLocaleString("en-US"),
      );
    }
    return result;
  }
}

/** Python's range(), refused past `maxRange` items as jinja2.sandbox.safe_range refuses them. */
function boundedRange(maxRange: number): (start: number, stop?: number, step?: number) => number[] {
  return (start, stop, step = 1) => {
    const [from, to] = stop === undefined ? [0, start] : [start, stop];
    if (![from, to, step].every((v) => Number.isInteger(v))) throw new Error("range() takes integers");
    if (step === 0) throw new Error("range() step must not be zero");
    const count = step > 0 ? Math.ceil((to - from) / step) : Math.ceil((from - to) / -step);
    if (count > maxRange) {
      throw new TemplateLimitError(`range() of ${count.toLocaleString("en-US")} items is larger than the sandbox allows (${maxRange.toLocaleString("en-US")})`);
    }
    return Array.from({ length: Math.max(0, count) }, (_, i) => from + i * step);
  };
}

const pad2 = (n: number): string => String(n).padStart(2, "0");
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

/** transformers' strftime_now: the local time formatted with Python's strftime codes (the common ones). */
function strftimeNow(format: string): string {
  const d = new Date();
  const codes: Record<string, () => string> = {
    Y: () => String(d.getFullYear()),
    y: () => pad2(d.getFullYear() % 100),
    m: () => pad2(d.getMonth() + 1),
    d: () => pad2(d.getDate()),
    B: () => MONTHS[d.getMonth()]!,
    b: () => MONTHS[d.getMonth()]!.slice(0, 3),
    A: () => DAYS[d.getDay()]!,
    a: () => DAYS[d.getDay()]!.slice(0, 3),
    H: () => pad2(d.getHours()),
    I: () => pad2(d.getHours() % 12 || 12),
    p: () => (d.getHours() < 12 ? "AM" : "PM"),
    M: () => pad2(d.getMinutes()),
    S: () => pad2(d.getSeconds()),
    "%": () => "%",
  };
  return format.replace(/%(.)/g, (whole, code: string) => codes[code]?.() ?? whole);
}

/** Renders a parsed template with the globals transformers gives chat templates, within `limits`. */
export function renderBounded(template: Template, variables: Record<string, unknown>, limits: RenderLimits = DEFAULT_RENDER_LIMITS): string {
  const env = new EnvironmentClass();
  const globals: Record<string, unknown> = {
    false: false,
    true: true,
    none: null,
    False: false,
    True: true,
    None: null,
    raise_exception: (message: unknown) => {
      throw new Error(String(message));
    },
    range: boundedRange(limits.maxRange),
    strftime_now: strftimeNow,
  };
  // The globals win: a variable named range must not lift the sandbox's limit.
  for (const [name, value] of Object.entries({ ...variables, ...globals })) env.set(name, value);
  const result = new BoundedInterpreter(env, limits).run(template.parsed);
  return String(result.value);
}

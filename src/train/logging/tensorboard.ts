// TensorBoard event files (tfevents) written by hand: TFRecord framing around Event protobufs holding
// scalar (simple_value) and text summaries, laid out as torch's SummaryWriter writes them for HF's Trainer.
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import { homedir, hostname as osHostname } from "node:os";
import { join } from "node:path";
import { TunaError, errorMessage } from "../../util/errors.ts";
import { maskedCrc32c } from "./crc32c.ts";
import { bytesField, concatBytes, doubleField, floatField, stringField, varintField } from "./protobuf.ts";

// ---- Event encoding (field numbers from tensorboard/compat/proto/{event,summary,tensor}.proto)

const EVENT_WALL_TIME = 1; // double
const EVENT_STEP = 2; // int64
const EVENT_FILE_VERSION = 3; // string
const EVENT_SUMMARY = 5; // Summary
const SUMMARY_VALUE = 1; // repeated Summary.Value
const VALUE_TAG = 1; // string
const VALUE_SIMPLE_VALUE = 2; // float
const VALUE_TENSOR = 8; // TensorProto
const VALUE_METADATA = 9; // SummaryMetadata
const METADATA_PLUGIN_DATA = 1; // SummaryMetadata.PluginData
const PLUGIN_NAME = 1; // string
const TENSOR_DTYPE = 1; // DataType enum
const TENSOR_SHAPE = 2; // TensorShapeProto
const TENSOR_STRING_VAL = 8; // repeated bytes
const SHAPE_DIM = 2; // repeated TensorShapeProto.Dim
const DIM_SIZE = 1; // int64
const DT_STRING = 7;

export const FILE_VERSION = "brain.Event:2";

/** Event header fields; proto3 leaves zero values off the wire. */
function eventHeader(wallTimeSec: number, step: number): Uint8Array[] {
  const parts: Uint8Array[] = [];
  if (!Object.is(wallTimeSec, 0)) parts.push(doubleField(EVENT_WALL_TIME, wallTimeSec));
  if (step !== 0) parts.push(varintField(EVENT_STEP, step));
  return parts;
}

function summaryEvent(wallTimeSec: number, step: number, summaryValue: Uint8Array): Uint8Array {
  const summary = bytesField(SUMMARY_VALUE, summaryValue);
  return concatBytes([...eventHeader(wallTimeSec, step), bytesField(EVENT_SUMMARY, summary)]);
}

/** The first record of every file: Event{wall_time, file_version: "brain.Event:2"}. */
export function encodeFileVersionEvent(wallTimeSec: number): Uint8Array {
  return concatBytes([...eventHeader(wallTimeSec, 0), stringField(EVENT_FILE_VERSION, FILE_VERSION)]);
}

/**
 * Event{wall_time, step, summary{value{tag, simple_value}}}: what torch's `add_scalar` writes by
 * default (new_style=False). The value is stored as float32. simple_value sits in a oneof, so a
 * value of 0 is still written.
 */
export function encodeScalarEvent(tag: string, value: number, step: number, wallTimeSec: number): Uint8Array {
  const summaryValue = concatBytes([stringField(VALUE_TAG, tag), floatField(VALUE_SIMPLE_VALUE, value)]);
  return summaryEvent(wallTimeSec, step, summaryValue);
}

/**
 * A text summary as torch's `add_text(tag, text)` writes it: tag `<tag>/text_summary`, plugin "text"
 * (its TextPluginData{version: 0} serializes to nothing), a DT_STRING tensor of shape [1].
 */
export function encodeTextEvent(tag: string, text: string, step: number, wallTimeSec: number): Uint8Array {
  const metadata = bytesField(METADATA_PLUGIN_DATA, stringField(PLUGIN_NAME, "text"));
  const shape = bytesField(SHAPE_DIM, varintField(DIM_SIZE, 1));
  const tensor = concatBytes([
    varintField(TENSOR_DTYPE, DT_STRING),
    bytesField(TENSOR_SHAPE, shape),
    stringField(TENSOR_STRING_VAL, text),
  ]);
  const summaryValue = concatBytes([
    stringField(VALUE_TAG, `${tag}/text_summary`),
    bytesField(VALUE_TENSOR, tensor),
    bytesField(VALUE_METADATA, metadata),
  ]);
  return summaryEvent(wallTimeSec, step, summaryValue);
}

/** TFRecord framing: u64 length, masked CRC32C of those 8 bytes, the data, masked CRC32C of the data (LE). */
export function frameRecord(data: Uint8Array): Uint8Array {
  const record = new Uint8Array(8 + 4 + data.length + 4);
  const view = new DataView(record.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(record.subarray(0, 8)), true);
  record.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return record;
}

// ---- Names and tags

/**
 * HF's `rewrite_logs`: `eval_x` -> `eval/x`, `test_x` -> `test/x`, anything else -> `train/x`
 * (so `loss` -> `train/loss`, `eval_loss` -> `eval/loss`).
 */
export function tensorBoardTag(logKey: string): string {
  if (logKey.startsWith("eval_")) return `eval/${logKey.slice(5)}`;
  if (logKey.startsWith("test_")) return `test/${logKey.slice(5)}`;
  return `train/${logKey}`;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/**
 * HF's default `logging_dir`: `<output_dir>/runs/<Mon><DD>_<HH>-<MM>-<SS>_<hostname>` in local time
 * (TrainingArguments' `default_logdir()`, strftime "%b%d_%H-%M-%S", the same default as torch's
 * SummaryWriter), so `tensorboard --logdir <output_dir>/runs` shows one run per training.
 */
export function defaultLoggingDir(outputDir: string, date: Date = new Date(), host: string = osHostname()): string {
  const two = (n: number): string => String(n).padStart(2, "0");
  const stamp = `${MONTHS[date.getMonth()]!}${two(date.getDate())}_${two(date.getHours())}-${two(date.getMinutes())}-${two(date.getSeconds())}`;
  return join(outputDir, "runs", `${stamp}_${host}`);
}

/**
 * Where HF's TensorBoardCallback writes in transformers 5.x (which dropped TrainingArguments.logging_dir):
 * $TENSORBOARD_LOGGING_DIR with a leading ~ expanded when set, else `defaultLoggingDir(outputDir)`.
 */
export function resolveLoggingDir(outputDir: string, env: Readonly<Record<string, string | undefined>> = process.env, date: Date = new Date(), host: string = osHostname()): string {
  const fromEnv = env.TENSORBOARD_LOGGING_DIR;
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv === "~" || fromEnv.startsWith("~/") ? join(homedir(), fromEnv.slice(1)) : fromEnv;
  return defaultLoggingDir(outputDir, date, host);
}

/** `events.out.tfevents.<%010d seconds>.<host>.<pid>.<uid><suffix>`, as tensorboard's EventFileWriter names files. */
export function eventFileName(wallTimeSec: number, host: string, pid: number, uid: number, suffix = ""): string {
  const seconds = String(Math.trunc(wallTimeSec)).padStart(10, "0");
  return `events.out.tfevents.${seconds}.${host}.${pid}.${uid}${suffix}`;
}

// ---- The writer

export interface TensorBoardWriterOptions {
  /** Appended to the file name (torch's `filename_suffix`). */
  filenameSuffix?: string;
  /** Wall clock in seconds; the default is Date.now() / 1000. Fixed in tests so files are reproducible. */
  clock?: () => number;
  /** Write pending events once this many are queued (torch: max_queue=10). */
  maxQueue?: number;
  /** Write pending events on the next add once this many seconds passed since the last write (torch: 120). */
  flushSecs?: number;
}

export interface TensorBoardWriter {
  /** The event file being written. */
  readonly path: string;
  addScalar(tag: string, value: number, step: number, wallTimeSec?: number): void;
  /** Text under `<tag>/text_summary`, e.g. the run configuration as HF's `args` (JSON). */
  addText(tag: string, text: string, step: number, wallTimeSec?: number): void;
  /**
   * One HF log event, as TensorBoardCallback.on_log writes it: keys renamed by `tensorBoardTag`,
   * numbers (and booleans, as 1/0) as scalars, strings as text, at `step`. A `step` key is the x-axis and is not written.
   * Returns the keys that were skipped because their value is neither (HF warns about those).
   */
  addLogs(logs: Readonly<Record<string, unknown>>, step: number): string[];
  /** Hands queued events to the OS (no fsync: like the Python writer's flush, it survives a crash of tuna, not of the machine). */
  flush(): void;
  close(): void;
}

// tensorboard's EventFileWriter numbers the writers of one process so that names never collide.
let nextWriterUid = 0;

/**
 * Opens a new event file in `logDir` (created if needed; see `defaultLoggingDir` for HF's default)
 * and writes its file_version record at once, as the Python writer does. Writes are synchronous:
 * events are queued and written on flush, when the queue is full, or after `flushSecs`.
 */
export function createTensorBoardWriter(logDir: string, options: TensorBoardWriterOptions = {}): TensorBoardWriter {
  const clock = options.clock ?? ((): number => Date.now() / 1000);
  const maxQueue = options.maxQueue ?? 10;
  const flushSecs = options.flushSecs ?? 120;
  const createdSec = clock();
  const path = join(logDir, eventFileName(createdSec, osHostname(), process.pid, nextWriterUid++, options.filenameSuffix ?? ""));

  let fd: number;
  try {
    mkdirSync(logDir, { recursive: true });
    fd = openSync(path, "wx");
  } catch (e) {
    throw new TunaError("IO", `cannot create TensorBoard event file ${path}: ${errorMessage(e)}; check that the logging directory is writable.`, { cause: e });
  }
  let closed = false;
  let queue: Uint8Array[] = [];
  let lastFlushSec = createdSec;

  const ensureOpen = (what: string): void => {
    if (closed) throw new TunaError("INTERNAL", `TensorBoard writer for ${path} is closed; ${what} came after close().`);
  };

  const flush = (): void => {
    if (closed) return;
    lastFlushSec = clock();
    if (queue.length === 0) return;
    const bytes = concatBytes(queue);
    queue = [];
    try {
      let written = 0;
      while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
    } catch (e) {
      throw new TunaError("IO", `cannot write TensorBoard event file ${path}: ${errorMessage(e)}`, { cause: e });
    }
  };

  const enqueue = (event: Uint8Array): void => {
    queue.push(frameRecord(event));
    if (queue.length >= maxQueue || clock() - lastFlushSec >= flushSecs) flush();
  };

  const checkStep = (step: number, tag: string): void => {
    if (!Number.isSafeInteger(step)) throw new TunaError("INTERNAL", `TensorBoard ${tag}: step ${step} is not an integer.`);
  };

  enqueue(encodeFileVersionEvent(createdSec));
  flush();

  const writer: TensorBoardWriter = {
    path,
    addScalar(tag, value, step, wallTimeSec) {
      ensureOpen(`addScalar("${tag}")`);
      checkStep(step, tag);
      enqueue(encodeScalarEvent(tag, value, step, wallTimeSec ?? clock()));
    },
    addText(tag, text, step, wallTimeSec) {
      ensureOpen(`addText("${tag}")`);
      checkStep(step, tag);
      enqueue(encodeTextEvent(tag, text, step, wallTimeSec ?? clock()));
    },
    addLogs(logs, step) {
      const skipped: string[] = [];
      for (const [key, value] of Object.entries(logs)) {
        if (key === "step") continue;
        // Python's bool is an int, so HF writes True/False as scalars 1/0.
        if (typeof value === "number" || typeof value === "boolean") writer.addScalar(tensorBoardTag(key), Number(value), step);
        else if (typeof value === "string") writer.addText(tensorBoardTag(key), value, step);
        else skipped.push(key);
      }
      return skipped;
    },
    flush,
    close() {
      if (closed) return;
      flush();
      closed = true;
      try {
        closeSync(fd);
      } catch (e) {
        throw new TunaError("IO", `cannot close TensorBoard event file ${path}: ${errorMessage(e)}`, { cause: e });
      }
    },
  };
  return writer;
}

// The bad-input cases: careless and hostile inputs across config, data, weights, adapters, checkpoints and
// hub answers. Each names the command it runs, what it sets up in its own folder, the exit code and the key
// words of the message. suite.test.ts runs them and checks that nothing outside the case's output changed.
import { cp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { openSafetensors } from "../../src/io/safetensors/reader.ts";
import { rewriteSafetensors } from "../io/safetensors/fixtures.ts";

export type Area = "config" | "data" | "weights" | "adapters" | "checkpoints" | "hub" | "generate";

/** Where a case runs: shared read-only fixtures, and its own folder (`dir`) whose `out` it may write. */
export interface CaseDirs {
  /** examples/tiny-llama, copied. */
  model: string;
  /** The golden llama model (f32) and its PEFT adapter, copied. */
  golden: string;
  adapter: string;
  /** A good chat dataset (JSON Lines). */
  data: string;
  /** The case's own folder; `${dir}/out` is its output folder. */
  dir: string;
  out: string;
  /** The fake hub's URL (hub cases). */
  hub: string;
}

export interface BadInputCase {
  name: string;
  area: Area;
  setup?: (d: CaseDirs) => Promise<void>;
  args: (d: CaseDirs) => string[];
  env?: (d: CaseDirs) => Record<string, string>;
  code: number;
  /** Every pattern must match the command's stderr. */
  message: RegExp[];
}

const jsonl = (rows: unknown[]): string => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
const chat = (q: string, a: string): unknown => ({ messages: [{ role: "user", content: q }, { role: "assistant", content: a }] });

async function write(path: string, content: string | Buffer): Promise<void> {
  await mkdir(join(path, ".."), { recursive: true });
  await writeFile(path, content);
}

async function copyModel(from: string, to: string, edit?: (config: Record<string, unknown>) => void): Promise<string> {
  await cp(from, to, { recursive: true });
  if (edit !== undefined) {
    const config = JSON.parse(await readFile(join(to, "config.json"), "utf8")) as Record<string, unknown>;
    edit(config);
    await writeFile(join(to, "config.json"), JSON.stringify(config));
  }
  return to;
}


const train = (d: CaseDirs, ...extra: string[]): string[] => [
  "train",
  "--model_name_or_path", d.model,
  "--dataset_name", d.data,
  "--splits", "train",
  "--chat_template_format", "chatml",
  "--use_peft_lora", "--lora_r", "2",
  "--max_steps", "1",
  "--max_seq_length", "48",
  "--report_to", "none",
  "--output_dir", d.out,
  ...extra,
];
const data = (d: CaseDirs, dataset: string, ...extra: string[]): string[] => [
  "data", "--model_name_or_path", d.model, "--dataset_name", dataset, "--splits", "train", "--chat_template_format", "chatml", "--output_dir", d.out, ...extra,
];

const configCases: BadInputCase[] = [
  { name: "unknown flag with a near miss", area: "config", args: (d) => train(d, "--lora_rr", "4"), code: 1, message: [/CONFIG_UNKNOWN|unknown/i, /--lora_r\b/] },
  { name: "an integer flag given a word", area: "config", args: (d) => train(d, "--lora_alpha", "lots"), code: 1, message: [/lora_alpha = lots/, /expected int/] },
  { name: "4-bit and 8-bit at once", area: "config", args: (d) => train(d, "--use_4bit_quantization", "--use_8bit_quantization"), code: 1, message: [/use_4bit_quantization/, /use_8bit_quantization/] },
  { name: "bf16 and fp16 at once", area: "config", args: (d) => train(d, "--bf16", "--fp16"), code: 1, message: [/bf16/, /fp16/] },
  { name: "a negative learning rate", area: "config", args: (d) => train(d, "--learning_rate", "-1"), code: 1, message: [/learning_rate/] },
  { name: "an unknown scheduler", area: "config", args: (d) => train(d, "--lr_scheduler_type", "wavy"), code: 1, message: [/lr_scheduler_type/, /cosine/] },
  { name: "max_seq_length 0", area: "config", args: (d) => train(d, "--max_seq_length", "0"), code: 1, message: [/max_seq_length/] },
  { name: "splits without a training split", area: "config", args: (d) => [...train(d), "--splits", "test"], code: 1, message: [/splits/, /train/] },
  { name: "a config file that does not exist", area: "config", args: (d) => ["train", join(d.dir, "missing.yaml")], code: 1, message: [/missing\.yaml/] },
  {
    name: "a config file with broken YAML",
    area: "config",
    setup: (d) => write(join(d.dir, "broken.yaml"), "lora_r: [4\nlora_alpha: 8\n"),
    args: (d) => ["train", join(d.dir, "broken.yaml")],
    code: 1,
    message: [/broken\.yaml/],
  },
  {
    name: "a config file with an unknown key",
    area: "config",
    setup: (d) => write(join(d.dir, "unknown.yaml"), "lora_rank: 4\n"),
    args: (d) => ["train", join(d.dir, "unknown.yaml")],
    code: 1,
    message: [/lora_rank/, /unknown\.yaml/],
  },
  { name: "push_to_hub without a repo", area: "config", args: (d) => train(d, "--push_to_hub", "True"), code: 1, message: [/push_to_hub needs --hub_model_id namespace\/name/] },
  {
    name: "an accelerate config whose processes do not split over its machines",
    area: "config",
    setup: (d) => write(join(d.dir, "accelerate.yaml"), "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 3\nnum_machines: 2\n"),
    args: (d) => train(d, "--config_file", join(d.dir, "accelerate.yaml")),
    code: 1,
    message: [/num_processes 3 over num_machines 2/],
  },
  {
    name: "a job whose size disagrees with its accelerate config",
    area: "config",
    setup: (d) => write(join(d.dir, "accelerate.yaml"), "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 2\n"),
    args: (d) => train(d, "--config_file", join(d.dir, "accelerate.yaml")),
    env: () => ({ RANK: "0", WORLD_SIZE: "3" }),
    code: 1,
    message: [/asks for 2 processes, but this job has 3 \(torchrun\)/],
  },
  {
    name: "tuna launch without a command",
    area: "config",
    args: () => ["launch", "--nproc_per_node", "2"],
    code: 1,
    message: [/no command to start/],
  },
  {
    name: "tuna launch with a node rank outside the job",
    area: "config",
    args: () => ["launch", "--nproc_per_node", "2", "--nnodes", "2", "--node_rank", "2", "tuna", "train"],
    code: 1,
    message: [/--node_rank 2 is not below --nnodes 2/],
  },
  { name: "a chat template file that does not exist", area: "config", args: (d) => train(d, "--chat_template_file", join(d.dir, "none.jinja")), code: 1, message: [/none\.jinja/] },
  {
    name: "a chat template file that does not parse",
    area: "config",
    setup: (d) => write(join(d.dir, "bad.jinja"), "{% for m in messages %}{{ m.content }}"),
    args: (d) => train(d, "--chat_template_file", join(d.dir, "bad.jinja")),
    code: 1,
    message: [/bad\.jinja/, /does not parse/],
  },
  {
    name: "a chat template that loops 200 million times",
    area: "config",
    setup: (d) => write(join(d.dir, "loop.jinja"), "{% for i in range(200000000) %}x{% endfor %}{% for m in messages %}{{ m.content }}{% endfor %}"),
    args: (d) => data(d, d.data, "--chat_template_file", join(d.dir, "loop.jinja")),
    code: 1,
    message: [/range\(\) of 200,000,000 items/, /train\.jsonl:1/],
  },
  {
    name: "a chat template that tries to reach the process",
    area: "config",
    setup: (d) => write(join(d.dir, "escape.jinja"), "{{ messages.constructor.constructor('return process')().exit(3) }}"),
    args: (d) => data(d, d.data, "--chat_template_file", join(d.dir, "escape.jinja")),
    code: 1,
    message: [/chat template/],
  },
];

const outputCases: BadInputCase[] = [
  { name: "an output_dir under /proc", area: "checkpoints", args: (d) => [...train(d), "--output_dir", "/proc/tuna-bad-input/out"], code: 1, message: [/IO/, /cannot create output_dir/] },
  {
    name: "an output_dir under a file",
    area: "checkpoints",
    setup: (d) => write(join(d.dir, "file"), "x"),
    args: (d) => [...train(d), "--output_dir", join(d.dir, "file", "out")],
    code: 1,
    message: [/IO/, /not a (folder|directory)/],
  },
  { name: "the base model's own folder as output_dir", area: "checkpoints", args: (d) => [...train(d), "--output_dir", d.model, "--overwrite_output_dir"], code: 1, message: [/base model's folder/] },
  {
    name: "an output_dir another run holds",
    area: "checkpoints",
    setup: (d) => write(join(d.out, ".tuna.lock"), JSON.stringify({ pid: process.pid, host: hostname(), started: "now" })),
    args: (d) => train(d),
    code: 1,
    message: [/in use by another tuna run/],
  },
  {
    name: "an output_dir holding a finished run",
    area: "checkpoints",
    setup: (d) => write(join(d.out, "adapter_config.json"), "{}"),
    args: (d) => train(d),
    code: 1,
    message: [/already holds a finished run/, /--overwrite_output_dir/],
  },
  { name: "resume from a folder that does not exist", area: "checkpoints", args: (d) => train(d, "--resume_from_checkpoint", join(d.dir, "nope")), code: 1, message: [/does not exist/] },
  {
    name: "resume from a folder that is not a checkpoint",
    area: "checkpoints",
    setup: (d) => mkdir(join(d.dir, "empty"), { recursive: true }).then(() => undefined),
    args: (d) => train(d, "--resume_from_checkpoint", join(d.dir, "empty")),
    code: 1,
    message: [/is not a checkpoint/],
  },
  { name: "resume true without checkpoints", area: "checkpoints", args: (d) => train(d, "--resume_from_checkpoint", "true"), code: 1, message: [/no complete checkpoint-N folder/] },
  {
    name: "resume from a checkpoint whose trainer_state.json is not JSON",
    area: "checkpoints",
    setup: (d) => write(join(d.dir, "checkpoint-2", "trainer_state.json"), "{ global_step: 2"),
    args: (d) => train(d, "--resume_from_checkpoint", join(d.dir, "checkpoint-2")),
    code: 1,
    message: [/FILE_FORMAT/, /trainer_state\.json/],
  },
  {
    name: "resume from a checkpoint whose step disagrees with its name",
    area: "checkpoints",
    setup: async (d) => {
      await write(join(d.dir, "checkpoint-2", "trainer_state.json"), JSON.stringify({ global_step: 999, log_history: [] }));
      await write(join(d.dir, "checkpoint-2", "rng_state.json"), JSON.stringify({ dropout: [1, 2, 3, 4], neftune: [1, 2, 3, 4] }));
    },
    args: (d) => train(d, "--resume_from_checkpoint", join(d.dir, "checkpoint-2")),
    code: 1,
    message: [/FILE_FORMAT/, /global_step is 999 but the folder is checkpoint-2/],
  },
];

const dataCases: BadInputCase[] = [
  { name: "a dataset path that does not exist", area: "data", args: (d) => data(d, join(d.dir, "nope.jsonl")), code: 1, message: [/FILE_NOT_FOUND/, /nope\.jsonl/] },
  {
    name: "a malformed JSON Lines row",
    area: "data",
    setup: (d) => write(join(d.dir, "bad.jsonl"), `${JSON.stringify(chat("a", "b"))}\n{"messages": [oops\n`),
    args: (d) => data(d, join(d.dir, "bad.jsonl")),
    code: 1,
    message: [/bad\.jsonl:2: not valid JSON/],
  },
  {
    name: "invalid UTF-8 in a JSON Lines file",
    area: "data",
    setup: (d) => write(join(d.dir, "latin1.jsonl"), Buffer.concat([Buffer.from('{"text": "caf'), Buffer.from([0xe9]), Buffer.from('"}\n')])),
    args: (d) => data(d, join(d.dir, "latin1.jsonl")),
    code: 1,
    message: [/latin1\.jsonl:1: invalid UTF-8 at byte offset 13/],
  },
  {
    name: "a terminal escape sequence inside a malformed row is shown escaped",
    area: "data",
    setup: (d) => write(join(d.dir, "esc.jsonl"), '{"text": "\u001b[2J\u001b[31mred"\n'),
    args: (d) => data(d, join(d.dir, "esc.jsonl")),
    code: 1,
    message: [/esc\.jsonl:1/, /^[^\u001b]*$/],
  },
  {
    name: "a JSON file that holds no rows",
    area: "data",
    setup: (d) => write(join(d.dir, "obj.json"), JSON.stringify({ hello: "world", rows: 3 }, null, 1)),
    args: (d) => data(d, join(d.dir, "obj.json")),
    code: 1,
    message: [/a JSON dataset must be/],
  },
  {
    name: "a CSV record with too many fields",
    area: "data",
    setup: (d) => write(join(d.dir, "bad.csv"), "text\nfine\n\"a\",\"b\"\n"),
    args: (d) => data(d, join(d.dir, "bad.csv")),
    code: 1,
    message: [/bad\.csv:3/],
  },
  { name: "an empty CSV file", area: "data", setup: (d) => write(join(d.dir, "empty.csv"), ""), args: (d) => data(d, join(d.dir, "empty.csv")), code: 1, message: [/header row/] },
  { name: "a data file of an unknown kind", area: "data", setup: (d) => write(join(d.dir, "notes.txt"), "hello"), args: (d) => data(d, join(d.dir, "notes.txt")), code: 1, message: [/\.jsonl/, /\.parquet/] },
  {
    name: "a folder without data files",
    area: "data",
    setup: (d) => write(join(d.dir, "folder", "README.md"), "# nothing"),
    args: (d) => data(d, join(d.dir, "folder")),
    code: 1,
    message: [/holds no dataset/],
  },
  {
    name: "a split that the dataset lacks",
    area: "data",
    setup: (d) => write(join(d.dir, "only", "train.jsonl"), jsonl([chat("a", "b")])),
    args: (d) => [...data(d, join(d.dir, "only")), "--splits", "train,test"],
    code: 1,
    message: [/has no split "test"/, /test_split_ratio|hold out/],
  },
  {
    name: "a conversation the chat template refuses, named by file:line",
    area: "data",
    setup: async (d) => {
      await write(join(d.dir, "roles.jsonl"), jsonl([chat("a", "b"), { messages: [{ role: "assistant", content: "first" }] }]));
      await write(join(d.dir, "strict.jinja"), "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{{ m.content }}{% endfor %}");
    },
    args: (d) => data(d, join(d.dir, "roles.jsonl"), "--chat_template_file", join(d.dir, "strict.jinja")),
    code: 1,
    message: [/roles\.jsonl:2: /, /roles must alternate/],
  },
  {
    name: "assistant_only_loss on plain text",
    area: "data",
    setup: (d) => write(join(d.dir, "plain.jsonl"), jsonl([{ text: "hello" }])),
    args: (d) => data(d, join(d.dir, "plain.jsonl"), "--assistant_only_loss"),
    code: 1,
    message: [/assistant_only_loss/, /plain\.jsonl:1/],
  },
  {
    name: "messages that are not a list",
    area: "data",
    setup: (d) => write(join(d.dir, "shape.jsonl"), jsonl([chat("a", "b"), { messages: "hello" }])),
    args: (d) => data(d, join(d.dir, "shape.jsonl")),
    code: 1,
    message: [/shape\.jsonl:2/, /messages/],
  },
  {
    name: "a split whose rows are all blank",
    area: "data",
    setup: (d) => write(join(d.dir, "blank.jsonl"), "\n\n  \n"),
    args: (d) => data(d, join(d.dir, "blank.jsonl")),
    code: 1,
    message: [/is empty/],
  },
  {
    name: "token rows whose labels do not fit input_ids",
    area: "data",
    setup: (d) => write(join(d.dir, "tokens.jsonl"), jsonl([{ input_ids: [1, 2, 3], labels: [1, 2] }])),
    args: (d) => data(d, join(d.dir, "tokens.jsonl")),
    code: 1,
    message: [/tokens\.jsonl:1/, /"labels" has 2 entries but "input_ids" has 3/],
  },
  {
    name: "text rows without the text column",
    area: "data",
    setup: (d) => write(join(d.dir, "cols.jsonl"), jsonl([{ body: "hello" }])),
    args: (d) => data(d, join(d.dir, "cols.jsonl"), "--dataset_text_field", "content"),
    code: 1,
    message: [/content|column/],
  },
];

const weightCases: BadInputCase[] = [
  { name: "a model path that does not exist", area: "weights", args: (d) => [...train(d), "--model_name_or_path", join(d.dir, "no-model")], code: 1, message: [/FILE_NOT_FOUND/, /no-model/] },
  {
    name: "a model folder without config.json",
    area: "weights",
    setup: (d) => write(join(d.dir, "noconfig", "model.safetensors"), "x"),
    args: (d) => ["inspect", join(d.dir, "noconfig")],
    code: 1,
    message: [/config\.json/],
  },
  {
    name: "a config.json that is not JSON",
    area: "weights",
    setup: async (d) => {
      await copyModel(d.golden, join(d.dir, "m"));
      await writeFile(join(d.dir, "m", "config.json"), "{ hidden_size: ");
    },
    args: (d) => ["inspect", join(d.dir, "m")],
    code: 1,
    message: [/config\.json/],
  },
  {
    name: "an unsupported model_type",
    area: "weights",
    setup: (d) => copyModel(d.golden, join(d.dir, "m"), (c) => (c["model_type"] = "gpt2")).then(() => undefined),
    args: (d) => ["inspect", join(d.dir, "m")],
    code: 1,
    message: [/MODEL_UNSUPPORTED/, /gpt2/],
  },
  {
    name: "weights missing a tensor",
    area: "weights",
    setup: async (d) => {
      await copyModel(d.golden, join(d.dir, "m"));
      await rewriteSafetensors(join(d.dir, "m", "model.safetensors"), (name) => (name === "model.norm.weight" ? null : undefined));
    },
    args: (d) => ["inspect", join(d.dir, "m")],
    code: 1,
    message: [/missing tensor model\.norm\.weight/],
  },
  {
    name: "a config whose hidden size does not fit the weights",
    area: "weights",
    setup: (d) => copyModel(d.golden, join(d.dir, "m"), (c) => (c["intermediate_size"] = Number(c["intermediate_size"]) + 8)).then(() => undefined),
    args: (d) => ["inspect", join(d.dir, "m")],
    code: 1,
    message: [/does not match the config/],
  },
  {
    name: "a config with fewer layers than the weights",
    area: "weights",
    setup: (d) => copyModel(d.golden, join(d.dir, "m"), (c) => (c["num_hidden_layers"] = 1)).then(() => undefined),
    args: (d) => ["inspect", join(d.dir, "m")],
    code: 1,
    message: [/num_hidden_layers 1/, /layer\(s\) 1/],
  },
  {
    name: "a truncated safetensors file",
    area: "weights",
    setup: async (d) => {
      await copyModel(d.golden, join(d.dir, "m"));
      const bytes = await readFile(join(d.dir, "m", "model.safetensors"));
      await writeFile(join(d.dir, "m", "model.safetensors"), bytes.subarray(0, bytes.length - 100));
    },
    args: (d) => ["inspect", join(d.dir, "m")],
    code: 1,
    message: [/FILE_FORMAT/, /model\.safetensors/],
  },
  {
    name: "a safetensors header of garbage",
    area: "weights",
    setup: async (d) => {
      await copyModel(d.golden, join(d.dir, "m"));
      await writeFile(join(d.dir, "m", "model.safetensors"), Buffer.concat([Buffer.from([16, 0, 0, 0, 0, 0, 0, 0]), Buffer.from("not json at all!")]));
    },
    args: (d) => ["inspect", join(d.dir, "m")],
    code: 1,
    message: [/FILE_FORMAT/],
  },
  {
    name: "NaN in a base weight",
    area: "weights",
    setup: async (d) => {
      await copyModel(d.golden, join(d.dir, "m"));
      await rewriteSafetensors(join(d.dir, "m", "model.safetensors"), (name, bytes) => {
        if (name === "model.layers.0.self_attn.v_proj.weight") new DataView(bytes.buffer).setFloat32(8, NaN, true);
        return bytes;
      });
    },
    args: (d) => ["merge", join(d.dir, "m"), "--adapter", d.adapter, "--output_dir", d.out],
    code: 1,
    message: [/tensor "model\.layers\.0\.self_attn\.v_proj\.weight" holds NaN at element 2/],
  },
  {
    name: "an index whose weight_map leaves the model folder",
    area: "weights",
    setup: async (d) => {
      await copyModel(d.golden, join(d.dir, "m"));
      const src = await openSafetensors(join(d.dir, "m", "model.safetensors"));
      const names = [...src.tensors.keys()];
      await src.close();
      await cp(join(d.dir, "m", "model.safetensors"), join(d.dir, "outside.safetensors"));
      await rm(join(d.dir, "m", "model.safetensors"));
      await writeFile(join(d.dir, "m", "model.safetensors.index.json"), JSON.stringify({ weight_map: Object.fromEntries(names.map((n) => [n, "../outside.safetensors"])) }));
    },
    args: (d) => ["inspect", join(d.dir, "m")],
    code: 1,
    message: [/not a file name in the model folder/],
  },
  {
    name: "an index naming a shard that is missing",
    area: "weights",
    setup: async (d) => {
      await copyModel(d.golden, join(d.dir, "m"));
      await writeFile(join(d.dir, "m", "model.safetensors.index.json"), JSON.stringify({ weight_map: { "model.norm.weight": "model-00002-of-00002.safetensors" } }));
      await rm(join(d.dir, "m", "model.safetensors"));
    },
    args: (d) => ["inspect", join(d.dir, "m")],
    code: 1,
    message: [/model-00002-of-00002\.safetensors/, /missing/],
  },
  {
    name: "a model folder without a tokenizer",
    area: "weights",
    setup: (d) => copyModel(d.golden, join(d.dir, "m")).then(() => undefined),
    args: (d) => [...train(d), "--model_name_or_path", join(d.dir, "m")],
    code: 1,
    message: [/tokenizer/],
  },
  {
    name: "a tokenizer.json that is not JSON",
    area: "weights",
    setup: async (d) => {
      await copyModel(d.model, join(d.dir, "m"));
      await writeFile(join(d.dir, "m", "tokenizer.json"), "{ nope");
    },
    args: (d) => [...train(d), "--model_name_or_path", join(d.dir, "m")],
    code: 1,
    message: [/tokenizer\.json/],
  },
];

const adapterCases: BadInputCase[] = [
  { name: "merge with an adapter folder that does not exist", area: "adapters", args: (d) => ["merge", d.golden, "--adapter", join(d.dir, "none"), "--output_dir", d.out], code: 1, message: [/FILE_NOT_FOUND/, /none/] },
  {
    name: "an adapter_config.json that is not JSON",
    area: "adapters",
    setup: async (d) => {
      await cp(d.adapter, join(d.dir, "a"), { recursive: true });
      await writeFile(join(d.dir, "a", "adapter_config.json"), "{ r: 8");
    },
    args: (d) => ["merge", d.golden, "--adapter", join(d.dir, "a"), "--output_dir", d.out],
    code: 1,
    message: [/adapter_config\.json/],
  },
  {
    name: "an adapter of another PEFT type",
    area: "adapters",
    setup: async (d) => {
      await cp(d.adapter, join(d.dir, "a"), { recursive: true });
      const config = JSON.parse(await readFile(join(d.dir, "a", "adapter_config.json"), "utf8")) as Record<string, unknown>;
      config["peft_type"] = "PREFIX_TUNING";
      await writeFile(join(d.dir, "a", "adapter_config.json"), JSON.stringify(config));
    },
    args: (d) => ["merge", d.golden, "--adapter", join(d.dir, "a"), "--output_dir", d.out],
    code: 1,
    message: [/PREFIX_TUNING/],
  },
  {
    name: "an adapter for another model's shapes",
    area: "adapters",
    args: (d) => ["generate", d.model, "--adapter", d.adapter, "--prompt", "hi"],
    code: 1,
    message: [/MODEL_INVALID/, /lora_A/],
  },
  {
    name: "inf in an adapter weight",
    area: "adapters",
    setup: async (d) => {
      await cp(d.adapter, join(d.dir, "a"), { recursive: true });
      await rewriteSafetensors(join(d.dir, "a", "adapter_model.safetensors"), (name, bytes) => {
        if (name.includes("q_proj.lora_B")) new DataView(bytes.buffer).setFloat32(0, -Infinity, true);
        return bytes;
      });
    },
    args: (d) => ["merge", d.golden, "--adapter", join(d.dir, "a"), "--output_dir", d.out],
    code: 1,
    message: [/q_proj\.lora_B\.weight" holds -inf at element 0/],
  },
  {
    name: "an adapter missing its weights file",
    area: "adapters",
    setup: async (d) => {
      await cp(d.adapter, join(d.dir, "a"), { recursive: true });
      await rm(join(d.dir, "a", "adapter_model.safetensors"));
    },
    args: (d) => ["merge", d.golden, "--adapter", join(d.dir, "a"), "--output_dir", d.out],
    code: 1,
    message: [/adapter_model\.safetensors/],
  },
  { name: "merge into the base model's folder", area: "adapters", args: (d) => ["merge", d.golden, "--adapter", d.adapter, "--output_dir", d.golden], code: 1, message: [/base model/] },
  {
    name: "merge into a folder that holds files, without --overwrite",
    area: "adapters",
    setup: (d) => write(join(d.out, "keep.txt"), "mine"),
    args: (d) => ["merge", d.golden, "--adapter", d.adapter, "--output_dir", d.out],
    code: 1,
    message: [/overwrite/],
  },
];

const generateCases: BadInputCase[] = [
  { name: "a negative temperature", area: "generate", args: (d) => ["generate", d.model, "--prompt", "hi", "--temperature", "-1"], code: 1, message: [/--temperature/, />= 0|at least 0/] },
  {
    name: "a prompt longer than the model's context",
    area: "generate",
    setup: (d) => copyModel(d.model, join(d.dir, "m"), (c) => (c["max_position_embeddings"] = 4)).then(() => undefined),
    args: (d) => ["generate", join(d.dir, "m"), "--prompt", "one two three four five six seven"],
    code: 1,
    message: [/max_position_embeddings\) is 4/],
  },
  { name: "eval without a dataset", area: "generate", args: (d) => ["eval", d.golden], code: 1, message: [/--dataset_name is required/] },
  {
    // Rows that are not token ids are a dataset to tokenize, which needs the model's tokenizer.
    name: "eval of text rows with a model that has no tokenizer",
    area: "generate",
    setup: (d) => write(join(d.dir, "eval.jsonl"), jsonl([{ text: "hello" }])),
    args: (d) => ["eval", d.golden, "--dataset_name", join(d.dir, "eval.jsonl"), "--splits", "train"],
    code: 1,
    message: [/no tokenizer\.json in .*golden-model/],
  },
];

const hubCases: BadInputCase[] = [
  { name: "an invalid hub id", area: "hub", args: (d) => [...train(d), "--model_name_or_path", "org/bad--name"], code: 1, message: [/not a valid hub repo id|neither an existing local/] },
  {
    name: "a hub id offline with nothing cached",
    area: "hub",
    args: (d) => [...train(d), "--model_name_or_path", "org/not-cached"],
    env: (d) => ({ HF_HUB_OFFLINE: "1", HF_HOME: join(d.dir, "hf") }),
    code: 1,
    message: [/HUB/, /org\/not-cached/],
  },
  {
    name: "a hub that sends an ETag naming a path outside the cache",
    area: "hub",
    args: () => ["inspect", "evil/etag"],
    env: (d) => ({ HF_ENDPOINT: d.hub, HF_HOME: join(d.dir, "hf") }),
    code: 1,
    message: [/ETag/, /not a content hash/],
  },
  {
    name: "a hub dataset listing with a path outside the repo",
    area: "hub",
    args: (d) => data(d, "evil/listing"),
    env: (d) => ({ HF_ENDPOINT: d.hub, HF_HOME: join(d.dir, "hf") }),
    code: 1,
    message: [/not a relative path inside the repo/],
  },
  {
    name: "an unreachable HF_ENDPOINT whose password is masked",
    area: "hub",
    args: () => ["inspect", "org/model"],
    env: (d) => ({ HF_ENDPOINT: "http://alice:hunter2@127.0.0.1:9", HF_HOME: join(d.dir, "hf") }),
    code: 1,
    message: [/alice:\*\*\*@127\.0\.0\.1/, /^(?![\s\S]*hunter2)/],
  },
];

export const CASES: BadInputCase[] = [...configCases, ...outputCases, ...dataCases, ...weightCases, ...adapterCases, ...generateCases, ...hubCases];

import { test } from "node:test";
import assert from "node:assert/strict";
import { createProgressDisplay, formatDuration, type ProgressStream } from "../../../src/train/logging/progress.ts";

function fakeStream(isTTY: boolean, columns = 200): ProgressStream & { writes: string[] } {
  const writes: string[] = [];
  return { writes, isTTY, columns, write: (text: string) => writes.push(text) };
}

function fakeClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

const TRAIN_LOG = { step: 10, epoch: 0.1, loss: 2.34567, learning_rate: 2e-4, grad_norm: 1.23456, tokens_per_second: 1234.4 };

test("durations print as h:mm:ss", () => {
  assert.equal(formatDuration(0), "0:00:00");
  assert.equal(formatDuration(90_000), "0:01:30");
  assert.equal(formatDuration(3_723_400), "1:02:03");
  assert.equal(formatDuration(Number.NaN), "?");
});

test("not a TTY: nothing per step, one plain line per log event with elapsed time and ETA", () => {
  const out = fakeStream(false);
  const clock = fakeClock();
  const progress = createProgressDisplay(out, { totalSteps: 100, now: clock.now });
  progress.update({ step: 0 });
  clock.advance(10_000);
  progress.update({ step: 10, loss: 2.3 });
  assert.deepEqual(out.writes, []);
  // 10 steps in 10 s, 90 to go: ETA 90 s.
  progress.log(TRAIN_LOG);
  progress.log({ step: 10, eval_loss: 2.1, eval_perplexity: 8.16617 });
  progress.log({ step: 100, train_runtime: 123.456, train_loss: 1.5 });
  progress.finish();
  assert.deepEqual(out.writes, [
    "step 10/100 (10%) | epoch 0.10 | loss 2.3457 | learning_rate 2.00e-4 | grad_norm 1.235 | tokens_per_second 1234 | elapsed 0:00:10 | eta 0:01:30\n",
    "step 10/100 (10%) | eval_loss 2.1000 | eval_perplexity 8.17\n",
    "step 100/100 (100%) | train_runtime 123.456 | train_loss 1.5 | elapsed 0:00:10 | eta 0:00:00\n",
  ]);
});

test("a NaN loss is printed as NaN, not hidden", () => {
  const out = fakeStream(false);
  const progress = createProgressDisplay(out, { totalSteps: 10, now: fakeClock().now });
  progress.log({ step: 1, loss: Number.NaN });
  assert.match(out.writes[0]!, /\| loss NaN \|/);
});

test("TTY: one line redrawn with \\r, throttled, with bar, metrics, elapsed<ETA", () => {
  const out = fakeStream(true);
  const clock = fakeClock();
  const progress = createProgressDisplay(out, { totalSteps: 100, now: clock.now, minRedrawMs: 100 });
  progress.update({ step: 0 });
  assert.equal(out.writes.length, 1);
  clock.advance(10_000);
  progress.update({ step: 10, loss: 2.34567, learningRate: 2e-4, gradNorm: 1.23456, tokensPerSecond: 1234.4 });
  const line = " 10/100 [██··················] 10% | loss 2.3457 | lr 2.00e-4 | gnorm 1.235 | 1234 tok/s | 0:00:10<0:01:30";
  assert.equal(out.writes[1], `\r${line}`);
  clock.advance(50);
  progress.update({ step: 11 }); // within 100 ms of the last draw: skipped
  assert.equal(out.writes.length, 2);
  clock.advance(60);
  progress.update({ step: 12 });
  assert.equal(out.writes.length, 3);
  assert.ok(out.writes.every((w) => !w.includes("\n")), "no newline while the bar is live");
  progress.update({ step: 100 }); // the last step is always drawn, however soon
  assert.equal(out.writes.length, 4);
  assert.match(out.writes[3]!, /^\r100\/100 \[█{20}\] 100% \| loss 2\.3457/);
  progress.finish();
  assert.equal(out.writes.at(-1), "\n");
});

test("TTY: every log event (train and eval) leaves a line above the bar; a shorter line blanks out the longer one before it", () => {
  const out = fakeStream(true);
  const clock = fakeClock();
  const progress = createProgressDisplay(out, { totalSteps: 100, now: clock.now });
  progress.update({ step: 0 });
  clock.advance(1000);
  const beforeTrain = out.writes.length;
  progress.log(TRAIN_LOG); // a line of its own (as HF prints its dicts), and the bar takes its values
  const trainLine = out.writes.slice(beforeTrain).find((w) => w.endsWith("\n"));
  assert.ok(trainLine !== undefined && /loss 2\.3457/.test(trainLine), JSON.stringify(out.writes.slice(beforeTrain)));
  const barWithMetrics = out.writes.at(-1)!;
  assert.match(barWithMetrics, /loss 2\.3457 \| lr 2\.00e-4 \| gnorm 1\.235 \| 1234 tok\/s/);
  const before = out.writes.length;
  progress.log({ step: 10, eval_loss: 2.1 });
  const [clear, evalLine, redraw] = out.writes.slice(before);
  assert.equal(clear, `\r${" ".repeat(barWithMetrics.length - 1)}\r`);
  assert.equal(evalLine, "step 10/100 | eval_loss 2.1000\n");
  assert.match(redraw!, /^\r 10\/100 /);

  const longOut = fakeStream(true);
  const p2 = createProgressDisplay(longOut, { totalSteps: 10, now: clock.now, minRedrawMs: 0 });
  p2.update({ step: 0 });
  p2.update({ step: 1, loss: 1, learningRate: 1e-3, gradNorm: 1, tokensPerSecond: 100000 });
  const long = longOut.writes.at(-1)!.length - 1;
  p2.update({ step: 2, tokensPerSecond: 1 });
  const second = longOut.writes.at(-1)!;
  assert.equal(second.length - 1, long, "padded to the previous width");
  assert.ok(second.endsWith(" "));
});

test("TTY: the line never reaches the terminal width (a wrapped line breaks \\r redraws)", () => {
  const out = fakeStream(true, 40);
  const progress = createProgressDisplay(out, { totalSteps: 1000, now: fakeClock().now });
  progress.update({ step: 5, loss: 2, learningRate: 1e-4, gradNorm: 1, tokensPerSecond: 5000 });
  assert.equal(out.writes.at(-1), `\r${"   5/1000 [····················] 0% | loss 2.0000".slice(0, 39)}`);
});

test("not a TTY: a log line without tokens_per_second shows the throughput of the last reported step", () => {
  const out = fakeStream(false);
  const clock = fakeClock();
  const progress = createProgressDisplay(out, { totalSteps: 10, now: clock.now });
  progress.update({ step: 0 });
  clock.advance(2000);
  progress.update({ step: 2, loss: 1, tokensPerSecond: 512.4 });
  progress.log({ step: 3, loss: 0.9, peak_memory_gib: 1.5 });
  assert.match(out.writes[0]!, /^step 3\/10 \(30%\) \| loss 0\.9000 \| peak_memory_gib 1\.50 \| 512 tok\/s \| elapsed /);
});

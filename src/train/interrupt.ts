// Ctrl-C during training: the first SIGINT or SIGTERM asks the trainer to stop after the current optimizer
// step and save a checkpoint; a second one exits at once. (HF Trainer just dies and loses the steps since
// its last save.)
export interface InterruptWatch {
  /** The signal that asked to stop, if any. */
  signal(): NodeJS.Signals | undefined;
  dispose(): void;
}

/** Exit status of a process ended by `signal`, as shells report it (128 + signal number). */
export function signalExitCode(signal: NodeJS.Signals): number {
  return signal === "SIGTERM" ? 143 : 130;
}

export function watchInterrupts(say: (text: string) => void): InterruptWatch {
  let received: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (received !== undefined) {
      say(`${signal} again: stopping now without a checkpoint of the current step.`);
      process.exit(signalExitCode(signal));
    }
    received = signal;
    say(`${signal}: finishing the current step and saving a checkpoint; press Ctrl-C again to stop at once.`);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return {
    signal: () => received,
    dispose: () => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    },
  };
}

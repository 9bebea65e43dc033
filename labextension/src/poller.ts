/** A value the server has, asked again every so often, shared by the views that show it. */
import { ISignal, Signal } from '@lumino/signaling';

import { RedspotError } from './api';

export class Poller<T> {
  /**
   * @param fetch asks the server
   * @param interval milliseconds between two asks while nothing is going on
   * @param busyInterval between two asks while `busy(value)` (a start, a build)
   */
  constructor(
    private fetch: () => Promise<T>,
    private interval: number,
    private busyInterval: number = interval,
    private busy: (value: T) => boolean = () => false
  ) {}

  get value(): T | null {
    return this._value;
  }

  /** What went wrong the last time, or null. */
  get error(): RedspotError | null {
    return this._error;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Ask now (and start asking every so often, unless stopped). */
  async refresh(): Promise<void> {
    window.clearTimeout(this._timer);
    try {
      this._value = await this.fetch();
      this._error = null;
    } catch (error) {
      this._error =
        error instanceof RedspotError ? error : new RedspotError(String(error), 0);
    }
    this._changed.emit();
    if (!this._stopped) {
      const busy = this._value !== null && this.busy(this._value);
      this._timer = window.setTimeout(
        () => void this.refresh(),
        busy ? this.busyInterval : this.interval
      );
    }
  }

  start(): void {
    if (this._stopped) {
      this._stopped = false;
      void this.refresh();
    }
  }

  stop(): void {
    this._stopped = true;
    window.clearTimeout(this._timer);
  }

  private _value: T | null = null;
  private _error: RedspotError | null = null;
  private _timer = 0;
  private _stopped = true;
  private _changed = new Signal<this, void>(this);
}

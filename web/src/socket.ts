// The room's WebSocket (docs/protocol.md): a snapshot on join, then events in
// `seq` order. On a drop it reconnects with the last `seq` seen, so it gets
// exactly what it missed, or a fresh snapshot when it fell too far behind.
import type { Snapshot } from './types';

export interface RoomEvent {
  type: string;
  seq?: number;
  data?: Record<string, unknown>;
  code?: string;
  message?: string;
  retry_after_ms?: number;
}

/** The close code of a node that stops and asks its viewers to reconnect elsewhere. */
const RESTARTING = 1012;

export interface RoomSocketHandlers {
  snapshot(snapshot: Snapshot): void;
  event(event: RoomEvent): void;
  error(code: string, message: string, retryAfterMs?: number): void;
  connection(state: 'connecting' | 'open' | 'closed'): void;
}

export class RoomSocket {
  private socket: WebSocket | null = null;
  private lastSeq: number | null = null;
  private attempts = 0;
  private closed = false;
  private timer: number | undefined;
  private waiting: (() => void)[] = [];

  constructor(
    private readonly room: string,
    private readonly handlers: RoomSocketHandlers,
  ) {
    this.open();
  }

  /** Sends a frame; false when the connection is down. */
  send(frame: Record<string, unknown>): boolean {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** Opens a new connection, as after signing in, keeping the position in the room; resolves once it is open. */
  reconnect(): Promise<void> {
    const opened = new Promise<void>((resolve) => this.waiting.push(resolve));
    const old = this.socket;
    this.socket = null;
    old?.close(1000);
    clearTimeout(this.timer);
    this.open();
    return opened;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.socket?.close(1000);
  }

  private open(): void {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const since = this.lastSeq === null ? '' : `?since=${this.lastSeq}`;
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/rooms/${encodeURIComponent(this.room)}/ws${since}`);
    this.socket = socket;
    this.handlers.connection('connecting');
    socket.addEventListener('open', () => {
      this.attempts = 0;
      this.handlers.connection('open');
      this.waiting.splice(0).forEach((resolve) => resolve());
    });
    socket.addEventListener('message', (message) => {
      // A replaced connection may still deliver what was in flight; the new
      // one sends it again from `since`.
      if (this.socket !== socket || typeof message.data !== 'string') return;
      let frame: RoomEvent;
      try {
        frame = JSON.parse(message.data) as RoomEvent;
      } catch {
        return;
      }
      const seq = frame.seq;
      if (typeof seq === 'number') {
        // An event already shown is never shown twice (a snapshot or state
        // replaces what is shown, whatever its number).
        const view = frame.type === 'snapshot' || frame.type === 'state';
        if (!view && this.lastSeq !== null && seq <= this.lastSeq) return;
        this.lastSeq = seq;
      }
      if (frame.type === 'snapshot' || frame.type === 'state') {
        this.handlers.snapshot(frame.data as unknown as Snapshot);
      } else if (frame.type === 'error') {
        this.handlers.error(frame.code ?? 'error', frame.message ?? 'Something went wrong.', frame.retry_after_ms);
      } else if (frame.type !== 'pong' && frame.type !== 'lagged') {
        this.handlers.event(frame);
      }
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.handlers.connection('closed');
      if (this.closed) return;
      // 1012: this node is restarting and the others serve the room; go to one
      // of them now (the load balancer picks it), spread over a quarter second.
      // Otherwise back off up to 10 s, with jitter so a restarted node is not
      // hit all at once.
      const delay =
        event.code === RESTARTING
          ? Math.random() * 250
          : Math.min(10_000, 500 * 2 ** this.attempts) * (0.5 + Math.random() / 2);
      this.attempts += 1;
      this.timer = window.setTimeout(() => this.open(), delay);
    });
  }
}

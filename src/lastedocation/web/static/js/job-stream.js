// Following a background job's events over SSE (GET URL/events), as the backup and
// speech pages do. The server ends the stream when the job ends, which the browser's
// own EventSource reconnect would take for a drop and retry forever; so on any error
// the stream is closed here, the job is asked for, and the stream is reopened by hand
// (from the last event seen, ?after=ID) only while the job has not ended.

/**
 * Follow the job at `url` until it ends or `close()` is called.
 * - types: the event types to listen to ("state", "progress", ...)
 * - onEvent(data): each event's parsed JSON
 * - onJob(job): the job as GET `url` answers after a drop
 * - isEnded(): whether the job on show has ended (no more events will come)
 * - onEnd(): the job ended or is gone (404), seen after a drop
 * Returns a handle with close().
 */
export function followJob({ url, types, onEvent, onJob, isEnded, onEnd }) {
  let source = null;
  let lastEventId = null;
  let retryTimer = null;
  let closed = false;

  function receive(message) {
    if (message.lastEventId) lastEventId = message.lastEventId;
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return;
    }
    onEvent(data);
  }

  function stop() {
    clearTimeout(retryTimer);
    source?.close();
    source = null;
  }

  async function ask() {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" }).catch(
      () => null,
    );
    const job = response?.ok ? await response.json().catch(() => null) : null;
    return { status: response?.status, job };
  }

  function open() {
    if (closed || source) return;
    // reopened by hand after a drop: from the last event seen, nothing twice
    const after = lastEventId ? `?after=${encodeURIComponent(lastEventId)}` : "";
    source = new EventSource(`${url}/events${after}`);
    for (const type of types) source.addEventListener(type, receive);
    source.onerror = async () => {
      // the server ended the stream (the job ended) or the connection dropped: ask what
      // the job is now before opening it again
      stop();
      const { status, job } = await ask();
      if (closed) return; // the page moved on to another job meanwhile
      if (job) onJob(job);
      if (status === 404 || isEnded()) {
        closed = true;
        return onEnd();
      }
      retryTimer = setTimeout(open, 2000);
    };
  }

  open();
  return {
    close() {
      closed = true;
      stop();
    },
  };
}

/** Live refresh: run a task every few seconds while the tab is visible, never two at once. */

/** Call task every `ms` while document.visibilityState is "visible", until signal aborts. A hidden tab
 * makes no calls; when it shows again an overdue call runs at once. The task handles its own errors. */
export function every(ms, task, signal) {
  let timer = 0;
  let running = false;
  let last = Date.now();
  const visible = () => document.visibilityState === 'visible';
  const schedule = () => {
    if (signal.aborted || timer || running || !visible()) return;
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
  const run = async () => {
    timer = 0;
    if (signal.aborted || !visible()) return;
    running = true;
    last = Date.now();
    try {
      await task();
    } catch (error) {
      if (error?.name !== 'AbortError') console.warn('refresh failed', error);
    } finally {
      running = false;
    }
    schedule();
  };
  const onVisibility = () => {
    if (visible()) schedule();
    else if (timer) { clearTimeout(timer); timer = 0; }
  };
  document.addEventListener('visibilitychange', onVisibility);
  signal.addEventListener('abort', () => {
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisibility);
  });
  schedule();
}

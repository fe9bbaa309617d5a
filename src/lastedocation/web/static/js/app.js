// Small behaviour shared by every page. htmx swaps 4xx answers too (they carry a
// message for the user), and never a 5xx (the page keeps what it had).
document.addEventListener("DOMContentLoaded", () => {
  if (window.htmx) {
    window.htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "4..", swap: true, error: false },
      { code: "...", swap: false, error: true },
    ];
  }
});

export function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content ?? "";
}

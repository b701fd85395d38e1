// A form with a data-confirm text asks before it is sent (delete buttons, the purge). One
// listener for every page instead of inline onsubmit handlers, which the
// Content-Security-Policy forbids.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

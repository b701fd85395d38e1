// The signup page: the new tenant's time zone is the browser's (the server checks the name).
document.getElementById("id_time_zone").value =
  Intl.DateTimeFormat().resolvedOptions().timeZone || "";

// Starts Swagger UI for mailer. Every URL is relative to /docs/, so the page keeps working behind a
// reverse proxy that mounts the service under a prefix, and nothing is fetched from the internet.
window.addEventListener("load", function () {
  "use strict";
  var here = window.location.href;
  window.ui = SwaggerUIBundle({
    url: new URL("../openapi.json", here).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // No persistAuthorization: it would keep the bearer token in localStorage, readable by any script on
    // this origin and left behind after the tab closes. "Authorize" again after a reload.
    tryItOutEnabled: false,
    displayRequestDuration: true,
    // The default sends the document to validator.swagger.io for a badge: no internet, and not our data to send.
    validatorUrl: null,
    oauth2RedirectUrl: new URL("static/oauth2-redirect.html", here).href,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});

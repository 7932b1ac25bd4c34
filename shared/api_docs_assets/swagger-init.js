// Starts Swagger UI on the page's #swagger-ui element, reading the OpenAPI document's URL from
// its data-openapi-url attribute (a file of its own: the pages' Content-Security-Policy allows
// no inline script).
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});

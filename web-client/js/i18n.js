// French and English strings for the patient's pages. The language follows
// the browser, with a visible switch; the choice is remembered.

const STRINGS = {
  en: {
    title: 'Your video consultation',
    switch_language: 'Français',
    loading: 'Opening your consultation…',
    continue: 'Continue',
    check_title: 'Checking your browser',
    check_ok: 'Your browser can hold a video consultation.',
    unsupported_title: 'This browser cannot hold a video call',
    unsupported_body: 'Please open this link in a recent Chrome, Firefox, Edge or Safari, on a computer, tablet or phone.',
    camera_title: 'Your camera',
    camera_body: 'You should see yourself below. If you do, continue.',
    camera_denied_title: 'The camera is blocked',
    camera_denied_body: 'Your browser did not allow the camera and microphone. Click the padlock or camera icon next to the address, allow them, then reload this page.',
    no_camera_title: 'No camera found',
    no_camera_body: 'We could not find a camera. You can still join with your voice only.',
    join_audio_only: 'Join with voice only',
    mic_title: 'Your microphone',
    mic_body: 'Say a few words: the bar below should move.',
    speaker_title: 'Your speaker',
    speaker_body: 'Press the button to play a short sound.',
    play_sound: 'Play a test sound',
    heard_it: 'I heard it',
    privacy_title: 'Your privacy',
    privacy_body: 'This consultation is not recorded. Only your care team and the people you invited can see and hear you. Your answers to the questions that follow are kept in your medical file for this visit.',
    questionnaire_title: 'A few questions before you see your doctor',
    q_fever: 'I have had a fever (38 °C or more) in the last 24 hours',
    q_cough: 'I have a cough',
    q_breathlessness: 'I am short of breath',
    q_fatigue: 'I feel unusually tired',
    q_pain: 'My pain today, from 0 (none) to 10 (the worst):',
    q_new_symptoms: 'Anything new you want to tell your doctor (optional)',
    send_answers: 'Send my answers',
    waiting_title: 'Please wait, your doctor will let you in',
    waiting_body: 'Keep this page open. You will join the consultation as soon as your doctor is ready.',
    message_from_doctor: 'Message from your care team:',
    call_title: 'In consultation',
    mute: 'Mute my microphone',
    unmute: 'Unmute my microphone',
    camera_off: 'Turn my camera off',
    camera_on: 'Turn my camera on',
    leave: 'Leave the consultation',
    reconnecting: 'Reconnecting…',
    your_doctor: 'Your care team',
    you: 'You',
    denied_title: 'The consultation will not take place now',
    denied_body: 'Your care team could not see you through this link.',
    ended_title: 'The consultation has ended',
    ended_body: 'Thank you. You can close this page.',
    left_title: 'You have left the consultation',
    link_expired_title: 'This link has expired',
    link_expired_body: 'The time for this consultation has passed. Please contact your care team for a new appointment.',
    link_not_yet_valid_title: 'It is too early to join',
    link_not_yet_valid_body: 'Your consultation is planned for {start}. This link opens 30 minutes before. Please come back then.',
    link_revoked_title: 'This link is no longer valid',
    link_revoked_body: 'The appointment was cancelled or changed. Please contact your care team.',
    visit_ended_title: 'This consultation is over',
    visit_ended_body: 'If you need another appointment, please contact your care team.',
    link_unknown_title: 'This link is not recognised',
    link_unknown_body: 'Please check that you opened the whole link from your message, or contact your care team.',
    network_title: 'We cannot reach the service',
    network_body: 'Please check your internet connection and reload this page.',
    chat_title: 'Messages',
    chat_label: 'Write a message',
    send: 'Send',
  },
  fr: {
    title: 'Votre téléconsultation',
    switch_language: 'English',
    loading: 'Ouverture de votre consultation…',
    continue: 'Continuer',
    check_title: 'Vérification de votre navigateur',
    check_ok: 'Votre navigateur peut faire une consultation vidéo.',
    unsupported_title: 'Ce navigateur ne permet pas l’appel vidéo',
    unsupported_body: 'Ouvrez ce lien dans un navigateur récent (Chrome, Firefox, Edge ou Safari), sur un ordinateur, une tablette ou un téléphone.',
    camera_title: 'Votre caméra',
    camera_body: 'Vous devriez vous voir ci-dessous. Si c’est le cas, continuez.',
    camera_denied_title: 'La caméra est bloquée',
    camera_denied_body: 'Votre navigateur n’a pas autorisé la caméra et le micro. Cliquez sur le cadenas ou l’icône de caméra à côté de l’adresse, autorisez-les, puis rechargez la page.',
    no_camera_title: 'Aucune caméra trouvée',
    no_camera_body: 'Nous n’avons pas trouvé de caméra. Vous pouvez rejoindre la consultation avec la voix seulement.',
    join_audio_only: 'Rejoindre avec la voix seulement',
    mic_title: 'Votre micro',
    mic_body: 'Dites quelques mots : la barre ci-dessous doit bouger.',
    speaker_title: 'Votre haut-parleur',
    speaker_body: 'Appuyez sur le bouton pour entendre un son bref.',
    play_sound: 'Jouer un son d’essai',
    heard_it: 'Je l’ai entendu',
    privacy_title: 'Votre vie privée',
    privacy_body: 'Cette consultation n’est pas enregistrée. Seuls votre équipe soignante et les personnes que vous avez invitées peuvent vous voir et vous entendre. Vos réponses aux questions suivantes sont conservées dans votre dossier pour cette consultation.',
    questionnaire_title: 'Quelques questions avant de voir votre médecin',
    q_fever: 'J’ai eu de la fièvre (38 °C ou plus) ces dernières 24 heures',
    q_cough: 'Je tousse',
    q_breathlessness: 'Je suis essoufflé(e)',
    q_fatigue: 'Je me sens anormalement fatigué(e)',
    q_pain: 'Ma douleur aujourd’hui, de 0 (aucune) à 10 (la pire) :',
    q_new_symptoms: 'Quelque chose de nouveau à dire à votre médecin (facultatif)',
    send_answers: 'Envoyer mes réponses',
    waiting_title: 'Patientez, votre médecin va vous faire entrer',
    waiting_body: 'Gardez cette page ouverte. Vous rejoindrez la consultation dès que votre médecin sera prêt.',
    message_from_doctor: 'Message de votre équipe soignante :',
    call_title: 'En consultation',
    mute: 'Couper mon micro',
    unmute: 'Rétablir mon micro',
    camera_off: 'Couper ma caméra',
    camera_on: 'Rétablir ma caméra',
    leave: 'Quitter la consultation',
    reconnecting: 'Reconnexion…',
    your_doctor: 'Votre équipe soignante',
    you: 'Vous',
    denied_title: 'La consultation n’aura pas lieu maintenant',
    denied_body: 'Votre équipe soignante n’a pas pu vous recevoir par ce lien.',
    ended_title: 'La consultation est terminée',
    ended_body: 'Merci. Vous pouvez fermer cette page.',
    left_title: 'Vous avez quitté la consultation',
    link_expired_title: 'Ce lien a expiré',
    link_expired_body: 'L’heure de cette consultation est passée. Contactez votre équipe soignante pour un nouveau rendez-vous.',
    link_not_yet_valid_title: 'Il est trop tôt pour rejoindre',
    link_not_yet_valid_body: 'Votre consultation est prévue le {start}. Ce lien s’ouvre 30 minutes avant. Revenez à ce moment-là.',
    link_revoked_title: 'Ce lien n’est plus valable',
    link_revoked_body: 'Le rendez-vous a été annulé ou modifié. Contactez votre équipe soignante.',
    visit_ended_title: 'Cette consultation est terminée',
    visit_ended_body: 'Si vous avez besoin d’un autre rendez-vous, contactez votre équipe soignante.',
    link_unknown_title: 'Ce lien n’est pas reconnu',
    link_unknown_body: 'Vérifiez que vous avez ouvert le lien en entier depuis votre message, ou contactez votre équipe soignante.',
    network_title: 'Le service est injoignable',
    network_body: 'Vérifiez votre connexion internet et rechargez la page.',
    chat_title: 'Messages',
    chat_label: 'Écrire un message',
    send: 'Envoyer',
  },
};

/**
 * A translation catalogue over `strings` ({ en: {...}, fr: {...} }): the
 * language follows the browser, with a visible switch; the choice is
 * remembered across the patient's and staff's pages.
 */
export function catalogue(strings) {
  const pick = () => {
    const saved = localStorage.getItem('teleconsult.lang');
    if (saved && strings[saved]) return saved;
    return (navigator.language || 'en').toLowerCase().startsWith('fr') ? 'fr' : 'en';
  };
  let lang = pick();
  const t = (key, values = {}) => {
    const text = strings[lang][key] ?? strings.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => values[name] ?? '');
  };
  const translate = (root = document) => {
    document.documentElement.lang = lang;
    for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  };
  return {
    /** The current language code. */
    language: () => lang,
    /** A string, with `{name}` placeholders filled from `values`. */
    t,
    /** Fills every `[data-i18n]` element under `root`. */
    translate,
    /** Switches between French and English. */
    toggle: () => {
      lang = lang === 'fr' ? 'en' : 'fr';
      localStorage.setItem('teleconsult.lang', lang);
      translate();
    },
  };
}

export const { language, t, translate, toggle } = catalogue(STRINGS);
